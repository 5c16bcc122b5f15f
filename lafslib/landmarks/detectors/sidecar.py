"""Precomputed landmarks from a sidecar file, looked up by image key."""

from __future__ import annotations

import os

import numpy as np

from lafslib.landmarks.detectors.base import Face, FaceDetector
from lafslib.landmarks.store import LandmarkTable, load_landmarks

__all__ = ["SidecarDetector"]


class SidecarDetector(FaceDetector):
    """Precomputed landmarks read from a sidecar file, looked up by image key.

    Args:
        path: landmark file (``.csv``/``.npz``, see :mod:`lafslib.landmarks.store`).
    """

    name = "sidecar"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.table: LandmarkTable = load_landmarks(path)
        self.num_points = self.table.num_points

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        if key is None:
            raise ValueError("the sidecar detector needs the image key (relative path or index)")
        if key not in self.table:
            return []
        pts = self.table[key].astype(np.float64)
        layout = {68: "ibug68", 5: "arcface5"}.get(len(pts), "learned")
        box = np.concatenate([pts.min(0), pts.max(0)])
        return [Face(box, 1.0, pts, layout)]
