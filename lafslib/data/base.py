"""Common behaviour of lafslib image datasets: sample dicts, transforms, bad-image skipping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lafslib.data.images import BadImageCounter, BadImageError
from lafslib.landmarks.store import LandmarkTable

__all__ = ["FaceDataset"]


class FaceDataset(Dataset):
    """Base class: subclasses implement ``__len__``, ``_load(i) -> (image, name)``,
    ``_label(i)`` and ``_landmark_key(i)``.

    ``__getitem__`` returns the transform of ``{"image": uint8 (H, W, 3) RGB, "label": int (-1
    when unlabelled), "index": int, "path": str, "landmarks": float32 (K, 2) px (only when a
    sidecar is attached)}``. An unreadable image is counted in :attr:`bad_images`, reported
    with a warning naming the file, and replaced by the next readable one, so an epoch never
    stops on a bad file.
    """

    labelled: bool = False
    landmarks: LandmarkTable | None = None

    def __init__(self, transform: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.transform = transform
        self.bad_images = BadImageCounter()
        self._bad: set[int] = set()

    def _load(self, index: int) -> tuple[np.ndarray, str]:
        raise NotImplementedError

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

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                out = self.sample(i)
            except BadImageError as exc:
                self._bad.add(i)
                self.bad_images.record(exc, str(i))
                continue
            return self.transform(out) if self.transform is not None else out
        raise RuntimeError(f"{type(self).__name__}: no readable image among {n} files")
