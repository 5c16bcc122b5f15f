"""Optimizers as the training device runs them best: AdamW's fused kernel (one kernel over every
parameter) on CUDA and on CPUs, the foreach implementation where torch has no fused kernel."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["adamw"]


def adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    """AdamW over ``groups``, fused where torch supports it on the parameters' device.

    On 2 CPU threads the fused kernel steps a DINO head of 16.8M parameters about 5x faster
    than the foreach one (benchmarks/bench_pretrain_step.py measures the step).

    Args:
        groups: parameter groups (their parameters on the training device).
        lr: initial learning rate (the loop's schedule sets it every step).
    """
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except RuntimeError:  # torch < 2.4 on CPU, or a device without the fused kernel
        return torch.optim.AdamW(groups, lr=lr)
