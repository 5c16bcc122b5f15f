"""Finetuning data: labelled faces with their keypoints, and few-shot subsets of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lafslib.data.base import first_readable
from lafslib.errors import DataError
from lafslib.landmarks.grid import FLIP_5
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112

__all__ = ["FaceTransform", "FewShotSubset", "faces_on_device", "few_shot_indices"]


class FaceTransform:
    """Sample dict -> ``(image uint8 (3, S, S), label, keypoints (5, 2) in [0, 1], flip)``: the
    per-sample part of finetuning augmentation (a random horizontal flip, drawn here and
    applied to the batch on the training device by :func:`faces_on_device`)."""

    def __init__(self, flip: bool = True) -> None:
        self.flip = flip

    def __call__(
        self, sample: dict[str, Any]
    ) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        img = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        h, w = img.shape[-2:]
        pts = sample.get("landmarks")
        if pts is None or len(pts) != 5:
            pts = ARCFACE_TEMPLATE_112 * np.array([w / 112.0, h / 112.0])
        kp = torch.as_tensor(np.asarray(pts), dtype=torch.float32) / torch.tensor([w, h])
        flip = torch.tensor(bool(self.flip and torch.rand(()) < 0.5))
        return img, int(sample["label"]), kp, flip


def faces_on_device(
    batch: Sequence[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A collated :class:`FaceTransform` batch on ``device``: images (B, 3, S, S) in [-1, 1]
    mirrored where drawn, labels (B,), keypoints (B, 5, 2) mirrored with their left/right
    indices swapped."""
    images, labels, kp, flip = (t.to(device, non_blocking=True) for t in batch)
    x = images.float().div_(127.5).sub_(1.0)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    mirrored = kp[:, FLIP_5] * torch.tensor([-1.0, 1.0], device=device) + torch.tensor(
        [1.0, 0.0], device=device
    )
    return x, labels, torch.where(flip[:, None, None], mirrored, kp)


def few_shot_indices(
    labels: list[int], per_identity: int | None, identity_fraction: float, seed: int
) -> tuple[list[int], dict[int, int]]:
    """Indices of a few-shot subset and the map from old to contiguous new labels.

    Keeps ``ceil(identity_fraction * C)`` identities (a seeded random choice) and, of each,
    ``per_identity`` images (a seeded random choice; all when None). Label -1 (a record whose
    label is unreadable) is no identity: those images are left out.
    """
    if not 0 < identity_fraction <= 1:
        raise ValueError(f"data.identity_fraction must be in (0, 1], got {identity_fraction}")
    rng = np.random.default_rng(seed)
    by_id: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        if int(y) >= 0:
            by_id.setdefault(int(y), []).append(i)
    if not by_id:
        raise DataError(f"none of the {len(labels)} training images has an identity label")
    ids = sorted(by_id)
    keep = sorted(rng.permutation(ids)[: math.ceil(identity_fraction * len(ids))].tolist())
    indices = []
    for y in keep:
        members = by_id[y]
        if per_identity is not None:
            members = sorted(rng.permutation(members)[:per_identity].tolist())
        indices += members
    return indices, {y: i for i, y in enumerate(keep)}


class FewShotSubset(Dataset):
    """A subset with labels remapped to ``0 .. C'-1``.

    An unreadable image is replaced by the next readable image of the subset (never by one
    outside it, whose identity may not be in the subset).
    """

    def __init__(self, dataset: Dataset, indices: list[int], label_map: dict[int, int]) -> None:
        self.dataset, self.indices, self.label_map = dataset, indices, label_map
        self.num_classes = len(label_map)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        load = getattr(self.dataset, "load", None)
        if load is None:
            x, y, *rest = self.dataset[self.indices[i]]
        else:
            where = getattr(self.dataset, "location", "") or type(self.dataset).__name__
            x, y, *rest = first_readable(load, self.indices, i, f"{where} (training subset)")
        return x, self.label_map[y], *rest
