"""Common behaviour of lafslib image datasets: sample dicts, transforms, bad-image skipping."""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, get_worker_info

from lafslib.errors import DataError
from lafslib.io import BadImageCounter, BadImageError
from lafslib.landmarks.store import LandmarkFileError, LandmarkTable, load_landmarks

__all__ = ["FaceDataset", "first_readable", "first_readable_sample", "freeze_inherited_objects"]

_frozen_in: int | None = None  # the process whose inherited objects were frozen


def freeze_inherited_objects() -> bool:
    """In a DataLoader worker process, once: move every object inherited from the parent into
    the garbage collector's permanent generation (:func:`gc.freeze`).

    A forked worker shares its parent's memory until a page is written; the collector's full
    passes write the header of every object they visit, so without this each worker copies
    the parent's whole Python heap (the imported modules, hundreds of MiB with torch) over an
    epoch. Called by :class:`FaceDataset` on its first item in each worker; a no-op in the
    main process. Returns whether it froze (True once per worker).
    """
    global _frozen_in
    if _frozen_in == os.getpid() or get_worker_info() is None:
        return False
    _frozen_in = os.getpid()
    gc.freeze()
    return True


def first_readable(
    load: Callable[[int], Any], indices: Sequence[int], start: int, source: str
) -> Any:
    """``load(indices[start])``, or the first readable item after it (wrapping around).

    A subset passes its own indices, so a bad image is replaced by another image of the
    subset, never by one outside it.

    Raises:
        DataError: no index of ``indices`` is readable.
    """
    n = len(indices)
    for offset in range(n):
        try:
            return load(indices[(start + offset) % n])
        except BadImageError:
            continue
    raise DataError(f"{source}: no readable image among {n} files")


def first_readable_sample(dataset: Any, limit: int = 100) -> dict[str, Any] | None:
    """The raw sample of the first readable image among the first ``limit`` (None if none)."""
    sample = getattr(dataset, "sample", None)
    for i in range(min(len(dataset), limit) if sample is not None else 0):
        try:
            return sample(i)
        except BadImageError:
            continue
    return None


class FaceDataset(Dataset):
    """Base class: subclasses implement ``__len__``, ``_load(i) -> (image, name)``,
    ``_label(i)`` and ``_landmark_key(i)``.

    ``__getitem__`` returns the transform of ``{"image": uint8 (H, W, 3) RGB, "label": int (-1
    when unlabelled), "index": int, "path": str, "landmarks": float32 (K, 2) px (only when a
    sidecar is attached)}``. An unreadable image is counted in :attr:`bad_images`, reported
    with a warning naming the file, and replaced by the next readable one, so an epoch never
    stops on a bad file; :meth:`load` raises instead, for subsets that replace it themselves.
    """

    labelled: bool = False
    landmarks: LandmarkTable | None = None
    location: str = ""  # the folder or file, for messages

    def __init__(self, transform: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.transform = transform
        self.bad_images = BadImageCounter()
        self._bad: dict[int, str] = {}

    def _load(self, index: int) -> tuple[np.ndarray, str]:
        raise NotImplementedError

    def _image_size(self) -> int | None:
        """Longest side of the first readable image (the images of a dataset are aligned)."""
        for i in range(min(len(self), 20)):
            try:
                image, _ = self._load(i)
            except BadImageError:
                continue
            return int(max(image.shape[:2]))
        return None

    def attach_landmarks(self, path: str | os.PathLike[str]) -> LandmarkTable:
        """Load a sidecar and check it fits: every point near the image (its range checked
        against the images' size) and 5, 68 or a square grid of points per image.

        Raises:
            LandmarkFileError: naming the file (and the row).
        """
        table = load_landmarks(path, image_size=self._image_size())
        k = table.num_points
        if k not in (5, 68) and (k < 4 or math.isqrt(k) ** 2 != k):
            raise LandmarkFileError(
                f"{table.source}: {k} points per image; landmarks must be 5 (insightface order), "
                "68 (iBUG) or a square grid (e.g. 196)"
            )
        self.landmarks = table
        return table

    def _label(self, index: int) -> int:
        return -1

    def _landmark_key(self, index: int) -> str | int:
        return index

    def sample(self, index: int) -> dict[str, Any]:
        """The raw sample dict at ``index`` (raises BadImageError for an unreadable image)."""
        image, name = self._load(index)
        out: dict[str, Any] = {
            "image": image,
            "label": self._label(index),
            "index": int(index),
            "path": name,
        }
        if self.landmarks is not None:
            key = self._landmark_key(index)
            if key not in self.landmarks:
                raise KeyError(f"{self.landmarks.source}: no landmarks for '{key}' (image {name})")
            out["landmarks"] = self.landmarks[key].copy()
        return out

    def load(self, index: int) -> Any:
        """The transformed sample at ``index``.

        Raises:
            BadImageError: the image is unreadable (counted and reported once).
        """
        if index in self._bad:
            raise BadImageError(self._bad[index])
        try:
            out = self.sample(index)
        except BadImageError as exc:
            self._bad[index] = str(exc)
            self.bad_images.record(exc, str(index))
            raise
        return self.transform(out) if self.transform is not None else out

    def __getitem__(self, index: int) -> Any:
        freeze_inherited_objects()
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return first_readable(self.load, range(n), index % n, self.location or type(self).__name__)
