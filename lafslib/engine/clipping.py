"""Gradient clipping of DINO: each parameter's gradient on its own, in a few foreach kernels."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["clip_gradients"]


@torch.no_grad()
def clip_gradients(model: nn.Module | Iterable[torch.Tensor], clip: float) -> None:
    """DINO's per-parameter clipping: scale each gradient whose norm exceeds ``clip`` by
    ``clip / (norm + 1e-6)``.

    The norms of all gradients come from one ``torch._foreach_norm``, the factors from one
    vectorised clamp, and the scaling from one ``torch._foreach_mul_`` per device and dtype
    (on the CPU over the clipped gradients only: a factor of 1 changes nothing), where a loop
    over parameters launched about five kernels per parameter.

    Args:
        model: a module (its parameters) or the parameters themselves.
        clip: the largest norm a parameter's gradient keeps.
    """
    params = model.parameters() if isinstance(model, nn.Module) else model
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    for (device, _), grads in groups.items():
        norms = torch.stack(torch._foreach_norm(grads, 2.0))
        factors = torch.clamp(clip / (norms + 1e-6), max=1.0)
        if device.type == "cpu":  # the host reads the factors for free: scale only the clipped
            clipped = (factors < 1.0).nonzero().flatten().tolist()
            if clipped:
                torch._foreach_mul_([grads[i] for i in clipped], [factors[i] for i in clipped])
        else:  # no host sync on an accelerator: scale all (most by exactly 1)
            torch._foreach_mul_(grads, list(factors.unbind()))
