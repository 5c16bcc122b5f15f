"""The detector interface: :class:`Face`, :class:`FaceDetector` and the errors of backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lafslib.errors import InputNotFoundError, LafsUserError
from lafslib.landmarks.template import landmarks68_to_5

__all__ = [
    "Face",
    "FaceDetector",
    "MissingDependencyError",
    "MissingWeightsError",
    "ModelFileError",
    "full_box",
    "require",
]


class MissingDependencyError(LafsUserError, ImportError):
    """An optional package needed by a backend is not installed."""


class ModelFileError(LafsUserError, ValueError):
    """A bundled model file is damaged or not what it should be; the message names it."""


class MissingWeightsError(InputNotFoundError):
    """Model weights are absent and cannot be downloaded; the message names files and folder."""


@dataclass
class Face:
    """One detected face.

    Attributes:
        box: (4,) float ``x0, y0, x1, y1`` in pixels.
        score: detector confidence (backend-specific scale; higher is better).
        landmarks: (K, 2) float pixel coordinates, K = 68 (iBUG), 5 (ArcFace order), ...
        layout: ``"ibug68"``, ``"arcface5"``, ``"dlib5"`` (eye corners and nose base) or
            ``"learned"``.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    layout: str

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    def five_points(self) -> np.ndarray:
        """The 5 ArcFace-order points used for alignment, (5, 2)."""
        if self.layout == "ibug68":
            return landmarks68_to_5(self.landmarks)
        if self.layout == "arcface5":
            return self.landmarks
        raise ValueError(
            f"{self.layout!r} landmarks do not give the 5 ArcFace points (eye centres, nose tip, "
            "mouth corners); use a 68-point predictor for alignment"
        )


class FaceDetector:
    """Interface: ``detect(image, key=None) -> list[Face]`` on uint8 RGB ``(H, W, 3)``.

    ``key`` names the image (relative path or record index) for backends that look landmarks
    up instead of computing them.
    """

    name = "base"
    num_points = 0

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        raise NotImplementedError


def require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {module!r} package is needed for this detector: pip install "
            f'"lafslib[{extra}]" ({exc})'
        ) from None


def full_box(image: np.ndarray) -> np.ndarray:
    """The whole image as a face box ``(x0, y0, x1, y1)``: for aligned crops."""
    return np.array([0.0, 0.0, image.shape[1] - 1.0, image.shape[0] - 1.0])
