"""Teacher update: exponential moving average of the student's parameters (foreach ops)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["update_ema"]


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` over parameters only.

    Parameters are matched by name, so both modules must share their architecture.
    """
    t_params = dict(teacher.named_parameters())
    pairs = [(t_params[n], p.detach()) for n, p in student.named_parameters() if n in t_params]
    if len(pairs) != len(t_params):
        raise ValueError("teacher and student parameters differ; cannot update the EMA")
    teacher_list = [t for t, _ in pairs]
    student_list = [s.to(t.dtype) for t, s in pairs]
    torch._foreach_mul_(teacher_list, momentum)
    torch._foreach_add_(teacher_list, student_list, alpha=1.0 - momentum)
