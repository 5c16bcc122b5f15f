"""The bundled YuNet face detector (Wu, Peng and Yu, "YuNet: A Tiny Millisecond-level Face
Detector", Machine Intelligence Research 2023), run through OpenCV's ``cv2.FaceDetectorYN``.

YuNet-s (75k parameters, 232 KB ONNX) gives per face a box, a score and the 5 ArcFace points
directly (eye centres, nose tip, mouth corners; image-left first), which is all alignment
needs. The ONNX file ships inside lafslib (``weights/``, Apache-2.0, licence beside it) and its
sha256 is checked when the detector is built, so no download and no new dependency are needed:
OpenCV comes with albumentations.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from lafslib.landmarks.detectors.base import Face, FaceDetector, ModelFileError

__all__ = ["YUNET_SHA256", "YuNetDetector", "yunet_model_path"]

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


def yunet_model_path() -> Path:
    """Path of the YuNet ONNX file shipped in the package."""
    return Path(__file__).resolve().parent / "weights" / YUNET_FILE


def _read_checked(path: Path, sha256: str | None) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(
            f"YuNet model file {path} cannot be read ({exc.strerror or exc}); reinstall lafslib"
        ) from None
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ModelFileError(
                f"YuNet model file {path} has sha256 {digest[:12]}..., expected {sha256[:12]}... "
                "(damaged or replaced); reinstall lafslib"
            )
    return data


class YuNetDetector(FaceDetector):
    """YuNet through OpenCV: boxes, scores and 5 ArcFace-order points.

    Photos larger than ``input_size`` on their long side are downscaled for detection only; the
    box and points are mapped back to the photo's pixels, so alignment samples the full
    resolution.

    Args:
        score_threshold: faces scoring below this (0..1) are dropped.
        nms_threshold: IoU above which overlapping boxes are merged.
        input_size: longest side given to the network (0: the photo's own size). Smaller is
            faster; faces below about 10 pixels at that size are missed.
        top_k: boxes kept before non-maximum suppression.
        model_path: another YuNet ONNX file (its sha256 is then not checked); default the
            bundled one.
        threads: OpenCV's thread count (process-wide); None leaves it as it is.

    Example:
        >>> det = YuNetDetector()
        >>> faces = det.detect(rgb)                 # (H, W, 3) uint8
        >>> faces[0].landmarks.shape                # (5, 2) pixels, ArcFace order
    """

    name = "yunet"
    num_points = 5

    def __init__(
        self,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        input_size: int = 640,
        top_k: int = 5000,
        model_path: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> None:
        import cv2

        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"YuNet score threshold must be in [0, 1], got {score_threshold}")
        if input_size < 0:
            raise ValueError(f"YuNet input size must be >= 0 (0: full size), got {input_size}")
        path = Path(model_path) if model_path is not None else yunet_model_path()
        data = _read_checked(path, None if model_path is not None else YUNET_SHA256)
        if threads is not None:
            cv2.setNumThreads(int(threads))
        self.score_threshold = float(score_threshold)
        self.input_size = int(input_size)
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._net = cv2.FaceDetectorYN.create(
                "onnx",
                np.frombuffer(data, np.uint8),
                np.zeros(0, np.uint8),
                (320, 320),
                self.score_threshold,
                float(nms_threshold),
                int(top_k),
            )
        except cv2.error as exc:
            raise ModelFileError(
                f"{path}: not a YuNet ONNX model OpenCV can load ({exc})"
            ) from None
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._cv2 = cv2

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        cv2 = self._cv2
        h, w = image.shape[:2]
        scale = 1.0
        if self.input_size and max(h, w) > self.input_size:
            scale = self.input_size / max(h, w)
        bgr = np.ascontiguousarray(image[..., ::-1])
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
            scale_x, scale_y = size[0] / w, size[1] / h
        else:
            scale_x = scale_y = 1.0
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        if rows is None:
            return []
        back = np.array([1.0 / scale_x, 1.0 / scale_y])
        faces = []
        for row in rows.astype(np.float64):
            x, y, bw, bh = row[:4]
            box = np.array([x, y, x + bw, y + bh]) * np.tile(back, 2)
            points = row[4:14].reshape(5, 2) * back
            faces.append(Face(box, float(row[14]), points, "arcface5"))
        return faces
