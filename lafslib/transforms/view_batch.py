"""Batches of views: stack a batch view by view, move it to a device, and group views of the
same shape so that a backbone sees each shape once."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["collate_views", "group_views", "move_views"]


def collate_views(batch: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Stack a batch of view lists into one dict of batched tensors per view index."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out = []
    for v in range(len(batch[0])):
        views = [item[v] for item in batch]
        stacked: dict[str, Any] = {"is_global": bool(views[0]["is_global"])}
        for key, value in views[0].items():
            if isinstance(value, torch.Tensor):
                stacked[key] = torch.stack([view[key] for view in views])
        out.append(stacked)
    return out


def move_views(views: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    """Collated views with their tensors on ``device`` (copies that need not block)."""
    return [
        {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in d.items()}
        for d in views
    ]


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
