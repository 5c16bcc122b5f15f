"""DINO self-distillation loss (Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021), used by LAFS pretraining (Sun & Tzimiropoulos, CVPR 2024)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOLoss", "sinkhorn_knopp"]


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets whose prototype usage is equal across the (global) batch.

    Sinkhorn-Knopp normalisation of ``exp(logits / temp)`` (SwAV, Caron et al., NeurIPS 2020;
    DINOv2's teacher centring, Oquab et al., 2023): rows alternately rescaled so that every
    prototype receives the same total mass over the batch, and every sample a distribution.
    The batch is summed across ranks when a process group is initialised.

    Args:
        logits: (B, K) teacher outputs of all global views of this rank.
        temp: teacher temperature.
        iterations: normalisation rounds (3).

    Returns:
        (B, K) targets; each row sums to 1.
    """
    distributed = dist.is_available() and dist.is_initialized()
    # one shift for the whole global batch scales every entry alike (undone by the
    # normalisation) and keeps exp() <= 1
    shift = logits.max().detach().clone()
    if distributed:
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = ((logits - shift) / temp).exp().t()  # (K, B)
    batch = torch.tensor([float(q.shape[1])], device=q.device, dtype=q.dtype)
    if distributed:
        dist.all_reduce(batch)
    for _ in range(iterations):
        per_prototype = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(per_prototype)
        q /= per_prototype * q.shape[0]
        q /= q.sum(dim=0, keepdim=True) * batch
    return (q * batch).t()


class DINOLoss(nn.Module):
    """Cross-entropy between centred, sharpened teacher outputs and student outputs.

    The loss is the mean over teacher views ``t`` (the globals) and student views ``s != t`` of
    ``-sum softmax((g_t - c) / tau_t) * log_softmax(f_s / tau_s)``. The centre ``c`` follows
    ``c <- m c + (1 - m) mean(g)``, the mean all-reduced across ranks when a process group is
    initialised. With ``centering="sinkhorn"`` the teacher targets are instead balanced over
    the batch by :func:`sinkhorn_knopp` (DINOv2), which keeps them sharp and different from
    image to image from the first step; the centre is still tracked for monitoring.
    Half-precision outputs (autocast) are computed in float32; float64 stays float64
    (``.double()`` the module for a float64 centre).

    Args:
        out_dim: head output size.
        student_temp: tau_s (0.1).
        center_momentum: m (0.9).
        centering: ``"ema"`` (DINO) or ``"sinkhorn"`` (DINOv2).

    Example:
        >>> loss_fn = DINOLoss(out_dim=16)
        >>> student = [torch.randn(4, 16) for _ in range(4)]  # 2 global + 2 local
        >>> teacher = [torch.randn(4, 16) for _ in range(2)]
        >>> loss = loss_fn(student, teacher, teacher_temp=0.04)
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "ema",
    ):
        super().__init__()
        if centering not in ("ema", "sinkhorn"):
            raise ValueError(f"centering must be 'ema' or 'sinkhorn', got {centering!r}")
        self.centering = centering
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student_out: list[torch.Tensor],
        teacher_out: list[torch.Tensor],
        teacher_temp: float,
        update_center: bool = True,
    ) -> torch.Tensor:
        """Args:
            student_out: one (B, out_dim) tensor per student view, the globals first.
            teacher_out: one (B, out_dim) tensor per global view (teacher sees globals only).
            teacher_temp: tau_t for this step.
            update_center: False for targets that are not this batch's teacher outputs
                (nearest-neighbour targets), so the centre follows the teacher only.

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
        if self.centering == "sinkhorn":
            q = sinkhorn_knopp(torch.cat([_at_least_fp32(t) for t in teacher_out]), teacher_temp)
            q = q.chunk(len(teacher_out))
        else:
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
        if update_center:
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
