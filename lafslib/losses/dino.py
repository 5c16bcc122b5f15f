"""DINO self-distillation loss (Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021), used by LAFS pretraining (Sun & Tzimiropoulos, CVPR 2024)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """Cross-entropy between centred, sharpened teacher outputs and student outputs.

    The loss is the mean over teacher views ``t`` (the globals) and student views ``s != t`` of
    ``-sum softmax((g_t - c) / tau_t) * log_softmax(f_s / tau_s)``. The centre ``c`` follows
    ``c <- m c + (1 - m) mean(g)``, the mean all-reduced across ranks when a process group is
    initialised. Half-precision outputs (autocast) are computed in float32; float64 stays
    float64 (``.double()`` the module for a float64 centre).

    Args:
        out_dim: head output size.
        student_temp: tau_s (0.1).
        center_momentum: m (0.9).

    Example:
        >>> loss_fn = DINOLoss(out_dim=16)
        >>> student = [torch.randn(4, 16) for _ in range(4)]  # 2 global + 2 local
        >>> teacher = [torch.randn(4, 16) for _ in range(2)]
        >>> loss = loss_fn(student, teacher, teacher_temp=0.04)
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student_out: list[torch.Tensor],
        teacher_out: list[torch.Tensor],
        teacher_temp: float,
    ) -> torch.Tensor:
        """Args:
            student_out: one (B, out_dim) tensor per student view, the globals first.
            teacher_out: one (B, out_dim) tensor per global view (teacher sees globals only).
            teacher_temp: tau_t for this step.

        Returns:
            Scalar loss; also updates the centre.
        """
        if not teacher_out or len(student_out) < len(teacher_out):
            raise ValueError(
                f"need >= 1 teacher view and at least as many student views, got "
                f"{len(teacher_out)} teacher and {len(student_out)} student views"
            )
        if student_out[0].shape[-1] != self.center.shape[-1]:
            raise ValueError(
                f"outputs have {student_out[0].shape[-1]} dims, loss expects {self.center.shape[-1]}"
            )
        log_p = [F.log_softmax(_at_least_fp32(s) / self.student_temp, dim=-1) for s in student_out]
        q = [
            F.softmax((_at_least_fp32(t) - self.center) / teacher_temp, dim=-1).detach()
            for t in teacher_out
        ]
        total, pairs = 0.0, 0
        for ti, qt in enumerate(q):
            for si, lp in enumerate(log_p):
                if si == ti:
                    continue
                total = total + torch.sum(-qt * lp, dim=-1).mean()
                pairs += 1
        self.update_center(teacher_out)
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_out: list[torch.Tensor]) -> None:
        """EMA of the batch mean of teacher outputs (all-reduced across ranks)."""
        out = _at_least_fp32(torch.cat(teacher_out))
        batch_sum = out.sum(dim=0, keepdim=True)
        count = torch.tensor([float(len(out))], device=out.device, dtype=out.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        mean = batch_sum / count
        self.center.mul_(self.center_momentum).add_(mean, alpha=1 - self.center_momentum)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or in its own dtype when that is wider (float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
