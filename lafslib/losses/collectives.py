"""Collectives the losses need across ranks (the neighbour queue, PartialFC)."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_rows"]


def all_gather_rows(value: torch.Tensor) -> torch.Tensor:
    """Rows of ``value`` from every rank, concatenated in rank order (every rank must pass the
    same shape; identity on one process). Not differentiable."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts = [torch.empty_like(value) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, value.contiguous())
        return torch.cat(parts)
    return value
