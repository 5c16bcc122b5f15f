"""Batches of views: group views of the same shape so that a backbone sees each shape once."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["group_views"]


def group_views(views: list[dict[str, Any]]) -> list[tuple[list[int], dict[str, Any]]]:
    """Concatenate consecutive views of equal token count for one backbone pass per group.

    Returns:
        ``[(view indices, {key: tensor concatenated along the batch})]``.
    """
    groups: list[tuple[list[int], dict[str, Any]]] = []
    start = 0
    while start < len(views):
        end = start + 1
        shape = views[start]["image"].shape[-2:]
        while end < len(views) and views[end]["image"].shape[-2:] == shape:
            end += 1
        members = views[start:end]
        merged = {
            k: torch.cat([m[k] for m in members])
            for k, val in members[0].items()
            if isinstance(val, torch.Tensor)
        }
        groups.append((list(range(start, end)), merged))
        start = end
    return groups
