"""Image folders: labelled (one sub-folder per identity) or unlabelled (any tree of images)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.data.base import FaceDataset
from lafslib.errors import DataError, InputNotFoundError
from lafslib.io import read_image
from lafslib.io.listing_cache import PathArray, cached_listing

__all__ = ["ImageFolderDataset", "find_sidecar"]

_CHUNK = 1 << 16
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


def _identity_labels(files: PathArray, root: Path) -> tuple[PathArray, np.ndarray]:
    """The sorted identities (first folder of each path) and the (N,) int32 label of each file.

    Raises:
        DataError: a file lies directly in ``root`` (no identity folder).
    """
    firsts = []
    for lo in range(0, len(files), _CHUNK):
        part = files.encoded(lo, lo + _CHUNK)
        loose = np.flatnonzero(np.char.find(part, b"/") < 0)
        if len(loose):
            raise DataError(
                f"{root}: labelled folders need one sub-folder per identity; "
                f"found loose image '{files[lo + int(loose[0])]}'"
            )
        firsts.append(np.unique(np.char.partition(part, b"/")[:, 0]))
    classes = np.unique(np.concatenate(firsts))
    labels = np.empty(len(files), dtype=np.int32)
    for lo in range(0, len(files), _CHUNK):
        first = np.char.partition(files.encoded(lo, lo + _CHUNK), b"/")[:, 0]
        labels[lo : lo + len(first)] = np.searchsorted(classes, first)
    names = PathArray.from_strings(c.decode("utf-8") for c in classes.tolist())
    return names, labels


class ImageFolderDataset(FaceDataset):
    """Images under a folder.

    The listing (cached beside a large folder, see :mod:`lafslib.io.listing_cache`), the labels
    and the landmark keys are numpy arrays: no Python object per image.

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
        self.files: PathArray = cached_listing(self.root)
        if not len(self.files):
            raise DataError(f"{self.root}: no image files found (extensions: .jpg, .png, ...)")
        self.classes: Sequence[str]
        if labelled:
            self.classes, self.labels = _identity_labels(self.files, self.root)
        else:
            self.classes = []
            self.labels = np.full(len(self.files), -1, dtype=np.int32)
        self.num_classes = len(self.classes)
        if landmarks == "auto":
            landmarks = find_sidecar(self.root)
        if landmarks is not None:
            table = self.attach_landmarks(landmarks)
            missing, first = 0, ""
            for lo in range(0, len(self.files), _CHUNK):
                absent = np.flatnonzero(table.rows(self.files.encoded(lo, lo + _CHUNK)) < 0)
                if len(absent) and not missing:
                    first = self.files[lo + int(absent[0])]
                missing += len(absent)
            if missing:
                raise DataError(
                    f"{landmarks}: no landmarks for {missing} of {len(self.files)} images "
                    f"under {self.root} (first: '{first}')"
                )

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> tuple[np.ndarray, str]:
        rel = self.files[index]
        return read_image(self.root / rel, self.max_side), rel

    def _label(self, index: int) -> int:
        return int(self.labels[index])

    def _landmark_key(self, index: int) -> str:
        return self.files[index]
