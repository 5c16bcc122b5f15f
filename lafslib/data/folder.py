"""Image folders: labelled (one sub-folder per identity) or unlabelled (any tree of images)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.data.base import FaceDataset
from lafslib.errors import DataError, InputNotFoundError
from lafslib.io import list_images, read_image

__all__ = ["ImageFolderDataset", "find_sidecar"]

SIDECAR_NAMES = ("landmarks.csv", "landmarks5.csv", "landmarks.npz", "landmarks5.npz")


def find_sidecar(root: str | os.PathLike[str]) -> Path | None:
    """The landmark sidecar stored in a dataset folder or its parent, if any."""
    root = Path(root)
    base = root if root.is_dir() else root.parent
    for folder in (base, base.parent):
        for name in SIDECAR_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


class ImageFolderDataset(FaceDataset):
    """Images under a folder.

    Args:
        root: dataset folder.
        labelled: True for one sub-folder per identity (labels are the sorted folder indices);
            False for any tree of images (labels -1).
        landmarks: landmark sidecar (``.csv``/``.npz`` keyed by relative path); ``"auto"``
            uses one stored in ``root`` when present; None attaches none.
        transform: callable applied to each sample dict.
        max_side: longest side after decoding (huge images are reduced).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        labelled: bool = False,
        landmarks: str | os.PathLike[str] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        max_side: int | None = 4096,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.location = str(self.root)
        if not self.root.is_dir():
            raise InputNotFoundError(f"image folder not found: {self.root}")
        self.labelled = labelled
        self.max_side = max_side
        self.files = list_images(self.root)
        if not self.files:
            raise DataError(f"{self.root}: no image files found (extensions: .jpg, .png, ...)")
        if labelled:
            self.classes = sorted({f.split("/", 1)[0] for f in self.files if "/" in f})
            loose = [f for f in self.files if "/" not in f]
            if loose:
                raise DataError(
                    f"{self.root}: labelled folders need one sub-folder per identity; "
                    f"found loose image '{loose[0]}'"
                )
            index = {c: i for i, c in enumerate(self.classes)}
            self.labels = [index[f.split("/", 1)[0]] for f in self.files]
        else:
            self.classes = []
            self.labels = [-1] * len(self.files)
        self.num_classes = len(self.classes)
        if landmarks == "auto":
            landmarks = find_sidecar(self.root)
        if landmarks is not None:
            self.attach_landmarks(landmarks)
            missing = [f for f in self.files if f not in self.landmarks]
            if missing:
                raise DataError(
                    f"{landmarks}: no landmarks for {len(missing)} of {len(self.files)} images "
                    f"under {self.root} (first: '{missing[0]}')"
                )

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> tuple[np.ndarray, str]:
        rel = self.files[index]
        return read_image(self.root / rel, self.max_side), rel

    def _label(self, index: int) -> int:
        return self.labels[index]

    def _landmark_key(self, index: int) -> str:
        return self.files[index]
