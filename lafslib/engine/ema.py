"""Teacher update: exponential moving average of the student's parameters, one fused pass."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TeacherEMA", "update_ema"]


class TeacherEMA:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` over parameter lists built
    once: one ``torch._foreach_lerp_`` per step.

    Parameters are matched by name. Student parameters that never train (``requires_grad``
    False: frozen, or the embedding head pretraining does not reach) are left out: their
    teacher twins keep the values they share with the student.

    Args:
        teacher: the EMA network.
        student: the trained network, same architecture.

    Raises:
        ValueError: a trained student parameter has no teacher twin of the same shape.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module) -> None:
        t_params = dict(teacher.named_parameters())
        self.teacher: list[torch.Tensor] = []
        self.student: list[torch.Tensor] = []
        for name, p in student.named_parameters():
            if not p.requires_grad:
                continue
            t = t_params.get(name)
            if t is None or t.shape != p.shape:
                raise ValueError(f"teacher and student differ at {name}; cannot update the EMA")
            self.teacher.append(t)
            self.student.append(p)
        self.same_dtype = all(t.dtype == s.dtype for t, s in zip(self.teacher, self.student))

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        """One EMA step with ``momentum`` (the teacher keeps that share of itself)."""
        student = (
            self.student
            if self.same_dtype
            else [s.to(t.dtype) for t, s in zip(self.teacher, self.student)]
        )
        torch._foreach_lerp_(self.teacher, student, 1.0 - momentum)


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """One EMA step of ``teacher`` towards ``student`` (builds the pairing each call: a loop
    that steps often keeps a :class:`TeacherEMA`)."""
    TeacherEMA(teacher, student).update(momentum)
