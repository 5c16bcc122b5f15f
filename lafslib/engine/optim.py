"""Optimizers as the training device runs them best: AdamW's fused kernel on CUDA, the
default (foreach) implementation elsewhere."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["adamw"]


def adamw(groups: list[dict[str, Any]], device: torch.device, lr: float) -> torch.optim.AdamW:
    """AdamW over ``groups``; fused (one kernel for every parameter) when ``device`` is CUDA.

    Args:
        groups: parameter groups (their parameters on ``device``).
        device: the training device.
        lr: initial learning rate (the loop's schedule sets it every step).
    """
    return torch.optim.AdamW(groups, lr=lr, fused=True if device.type == "cuda" else None)
