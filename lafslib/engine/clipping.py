"""Gradient clipping of DINO: each parameter's gradient on its own."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["clip_gradients"]


def clip_gradients(model: nn.Module, clip: float) -> None:
    """DINO's per-parameter clipping: scale each gradient whose norm exceeds ``clip``."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.detach().norm(2)
            p.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))
