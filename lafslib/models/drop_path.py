"""Stochastic depth (drop path) of a built ViT: a training setting, not part of the weights.

Recipes set it with ``optim.drop_path`` for pretraining and finetuning alike; it is applied to
the built model rather than passed to its factory, so an export's ``model.json`` never carries
it into the next stage.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

__all__ = ["set_drop_path", "drop_path_rates"]

_ATTRS = ("drop_path", "drop_path1", "drop_path2")  # lafslib / CVLFace blocks; timm blocks


def _blocks(model: nn.Module) -> list[nn.Module]:
    for name, module in model.named_modules():
        if (
            name.split(".")[-1] == "blocks"
            and isinstance(module, (nn.ModuleList, nn.Sequential))
            and len(module) > 0
            and all(any(hasattr(b, a) for a in _ATTRS) for b in module)
        ):
            return list(module)
    return []


def set_drop_path(model: nn.Module, rate: float) -> int:
    """Set the drop path rate of a transformer's blocks, rising linearly from 0 at the first
    block to ``rate`` at the last (as at construction; Huang et al., ECCV 2016; DeiT).

    Args:
        model: a lafslib / CVLFace / timm ViT, or a model holding one (Part fViT).
        rate: the last block's rate, in [0, 1).

    Returns:
        The number of blocks set (0: the model has no such blocks, e.g. an IResNet).
    """
    if not 0 <= rate < 1:
        raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
    blocks = _blocks(model)
    rates = torch.linspace(0, rate, len(blocks)).tolist() if blocks else []
    for block, r in zip(blocks, rates):
        for attr in _ATTRS:
            if isinstance(getattr(block, attr, None), (DropPath, nn.Identity)):
                setattr(block, attr, DropPath(r) if r > 0 else nn.Identity())
    return len(blocks)


def drop_path_rates(model: nn.Module) -> list[float]:
    """The drop path rate of every block (0 where the block has none)."""
    out = []
    for block in _blocks(model):
        module = next(getattr(block, a) for a in _ATTRS if hasattr(block, a))
        out.append(float(getattr(module, "drop_prob", 0.0)))
    return out
