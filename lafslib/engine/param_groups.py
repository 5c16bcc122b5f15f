"""Optimizer parameter groups: weight decay exemptions and layer-wise LR decay.

Layer ids come from the model's timm-style ``group_matcher()``: the stem is layer 0, block
``i`` is layer ``i + 1``, everything else (final norm, heads) is the last layer ``L + 1``.
Each group carries ``lr_scale = layer_decay ** (L + 1 - layer_id)``, which the training loop
multiplies into the scheduled LR, so the decay is actually applied (the LAFS release computes
it but never uses it).
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

__all__ = ["layer_id", "param_groups", "param_groups_layer_decay"]


def _num_blocks(model: nn.Module, pattern: str) -> int:
    ids = set()
    for name, _ in model.named_parameters():
        m = re.match(pattern, name)
        if m:
            ids.add(int(m.group(1)))
    return max(ids) + 1 if ids else 0


def layer_id(name: str, matcher: dict[str, Any], num_blocks: int) -> int:
    """Layer index of parameter ``name`` under a ``group_matcher`` dict."""
    stem = matcher.get("stem")
    if stem and re.match(stem, name):
        return 0
    blocks = matcher.get("blocks")
    pattern = blocks if isinstance(blocks, str) else (blocks[0][0] if blocks else None)
    if pattern:
        m = re.match(pattern, name)
        if m:
            return int(m.group(1)) + 1
    return num_blocks + 1


def param_groups_layer_decay(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    no_weight_decay: set[str] | None = None,
    prefix: str = "",
) -> list[dict[str, Any]]:
    """AdamW/SGD groups with per-layer ``lr_scale`` and no decay on 1-D params and exemptions.

    Args:
        model: a backbone with ``group_matcher()`` (else every parameter is one layer).
        weight_decay: decay of matrices and convolutions.
        layer_decay: LR multiplier per layer below the top (1.0 disables it).
        no_weight_decay: parameter names exempt from decay (e.g. position embeddings).
        prefix: prepended to names in the returned ``names`` lists (for reporting).
    """
    matcher = model.group_matcher() if hasattr(model, "group_matcher") else {}
    blocks = matcher.get("blocks")
    pattern = blocks if isinstance(blocks, str) else (blocks[0][0] if blocks else None)
    n_blocks = _num_blocks(model, pattern) if pattern else 0
    skip = no_weight_decay or set()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, matcher, n_blocks) if matcher else 0
        decay = not (p.ndim <= 1 or name.endswith(".bias") or name in skip)
        key = (lid, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (n_blocks + 1 - lid) if matcher else 1.0,
                "layer_id": lid,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(prefix + name)
    return [groups[k] for k in sorted(groups)]


def param_groups(
    model: nn.Module, skip: set[str] | None = None, include: set[str] | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices, none on biases, norms and ``skip`` names.

    Parameters that do not require gradients are left out, except the names in ``include``
    (the layout of an older optimizer state).
    """
    skip, include = skip or set(), include or set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad and name not in include:
            continue
        plain = name.removeprefix("module.").removeprefix("backbone.")
        if p.ndim <= 1 or name.endswith(".bias") or plain in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "apply_wd": True},
        {"params": no_decay, "apply_wd": False, "weight_decay": 0.0},
    ]
