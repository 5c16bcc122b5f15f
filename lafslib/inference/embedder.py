"""``FaceEmbedder``: photos in, faces with boxes, landmarks, scores and embeddings out.

One object detects the faces of raw photos, aligns each to the ArcFace template at the model's
input size, and embeds the crops in batches (optionally with the flip test); the shape of the
answer follows insightface's ``FaceAnalysis`` (a list of faces, each with its box, 5 keypoints,
detector score and normalised embedding). Already-aligned crops skip the detector.

Example:
    >>> embedder = FaceEmbedder("exports/mobilefacenet", threshold="report.json@1e-3")
    >>> faces = embedder.get("photo.jpg")            # list[EmbeddedFace], largest first
    >>> faces[0].box, faces[0].score, faces[0].embedding.shape
    >>> embedder.verify("a.jpg", "b.jpg").same       # True / False at the threshold
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.errors import DataError, ExportError
from lafslib.inference.photos import Photo, as_rgb, photo_name, split_batch
from lafslib.inference.thresholds import Threshold, load_threshold
from lafslib.landmarks.detectors import DEFAULT_DETECTOR

__all__ = [
    "DEFAULT_DETECTOR",
    "EmbeddedFace",
    "FaceEmbedder",
    "NoFaceError",
    "PreparedFaces",
    "Verification",
    "detect_faces",
    "prepare_faces",
]


class NoFaceError(DataError):
    """A photo in which the detector finds no face."""


def _export_folder(source: str | os.PathLike[str]) -> Path | None:
    """The local export folder behind a model source (an ``hf://`` model's local copy)."""
    text = os.fspath(source)
    if text.startswith("hf://"):
        from lafslib.models.convert.hub import resolve_export

        return resolve_export(text)
    path = Path(text)
    return path if path.is_dir() else None


def _check_has_head(folder: Path, allow_ssl: bool) -> None:
    from lafslib.models.export import read_export_info

    info = read_export_info(folder)
    if info.get("feature", "head") == "ssl" and not allow_ssl:
        raise ExportError(
            f"{folder}: a pretraining export without a trained embedding head (model.json "
            "'feature': 'ssl', the self-supervised feature); finetune it first "
            f"('lafs finetune --init {folder}'), or allow its SSL feature (--allow-ssl)"
        )


@dataclass
class PreparedFaces:
    """The aligned faces of one or more photos, ready to embed.

    Attributes:
        crops: uint8 (F, S, S, 3) aligned crops.
        keypoints: float32 (F, 5, 2) the 5 points in [0, 1] of the crop (for KP-RPE models).
        landmarks: (F, 5, 2) the 5 points in photo pixels.
        boxes: (F, 4) ``x0, y0, x1, y1`` in photo pixels.
        scores: (F,) detector scores (NaN for aligned input).
    """

    crops: np.ndarray
    keypoints: np.ndarray
    landmarks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty(size: int) -> PreparedFaces:
        """No face."""
        return PreparedFaces(
            np.zeros((0, size, size, 3), np.uint8),
            np.zeros((0, 5, 2), np.float32),
            np.zeros((0, 5, 2)),
            np.zeros((0, 4)),
            np.zeros(0),
        )

    @staticmethod
    def concat(parts: Sequence[PreparedFaces]) -> PreparedFaces:
        """The faces of several photos, in order."""
        names = ("crops", "keypoints", "landmarks", "boxes", "scores")
        return PreparedFaces(*(np.concatenate([getattr(p, k) for p in parts]) for k in names))


def detect_faces(image: np.ndarray, detector: Any, max_faces: int = 0) -> list[Any]:
    """Detected faces of an RGB photo, largest first, at most ``max_faces`` (0: all)."""
    faces = sorted(detector.detect(image), key=lambda f: -f.area)
    return faces[:max_faces] if max_faces else faces


def prepare_faces(
    image: np.ndarray, detector: Any | None, size: int, max_faces: int = 0, name: str = "photo"
) -> PreparedFaces:
    """Detect and align the faces of one photo (or take it as one aligned crop).

    Args:
        image: uint8 (H, W, 3) RGB.
        detector: a face detector; None: ``image`` is a crop already aligned at ``size``
            (box = the whole crop, landmarks = the ArcFace template, score NaN).
        size: side of the aligned crops (the model's input size).
        max_faces: largest faces kept (0: all).
        name: the photo's name, for messages.

    Raises:
        DataError: an aligned crop that is not ``size x size``.
    """
    from lafslib.landmarks.template import align_face, template_for_size, transform_points

    if detector is None:
        if image.shape[:2] != (size, size):
            raise DataError(
                f"{name}: an aligned crop must be {size}x{size}, got {image.shape[1]}x"
                f"{image.shape[0]} (a raw photo? detect faces instead)"
            )
        five = template_for_size(size)
        return PreparedFaces(
            image[None],
            (five / size)[None].astype(np.float32),
            five[None],
            np.array([[0.0, 0.0, float(size), float(size)]]),
            np.array([np.nan]),
        )
    found = detect_faces(image, detector, max_faces)
    if not found:
        return PreparedFaces.empty(size)
    crops, kps, points = [], [], []
    for face in found:
        five = np.asarray(face.five_points(), dtype=np.float64)
        crop, matrix = align_face(image, five, size)
        crops.append(crop)
        points.append(five)
        kps.append(transform_points(five, matrix) / size)
    return PreparedFaces(
        np.stack(crops),
        np.stack(kps).astype(np.float32),
        np.stack(points),
        np.stack([np.asarray(f.box, dtype=np.float64) for f in found]),
        np.array([float(f.score) for f in found]),
    )


@dataclass
class EmbeddedFace:
    """One face of a photo.

    Attributes:
        box: (4,) float ``x0, y0, x1, y1`` in photo pixels (the whole crop for aligned input).
        landmarks: (5, 2) float ArcFace-order points in photo pixels (insightface's ``kps``).
        score: the detector's score (NaN for aligned input; its scale depends on the detector).
        embedding: (D,) float32, unit L2 norm (insightface's ``normed_embedding``).
        photo: index of the photo in the call that found it.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    embedding: np.ndarray
    photo: int = 0

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    def similarity(self, other: EmbeddedFace | np.ndarray) -> float:
        """Cosine similarity with another face (or a unit embedding)."""
        vec = other.embedding if isinstance(other, EmbeddedFace) else np.asarray(other)
        return float(np.dot(self.embedding.astype(np.float64), vec.astype(np.float64)))


@dataclass
class Verification:
    """The answer of :meth:`FaceEmbedder.verify`.

    Attributes:
        similarity: cosine similarity of the two faces.
        threshold: the threshold it was compared with (None: no decision).
        same: ``similarity >= threshold`` (None without a threshold).
        faces: the face used in each photo (the largest).
        counts: faces found in each photo.
    """

    similarity: float
    threshold: Threshold | None
    same: bool | None
    faces: tuple[EmbeddedFace, EmbeddedFace]
    counts: tuple[int, int] = field(default=(1, 1))


class FaceEmbedder:
    """Detect, align and embed the faces of photos with an exported model.

    Args:
        model: an export folder (``model.safetensors`` + ``model.json``),
            ``hf://owner/repo[@revision]``, or an already loaded model with ``pretrained_cfg`` (its identity is then unknown: report thresholds are
            refused).
        detector: a detector name (``lafslib.landmarks.detectors.create_detector``), a built
            detector, or None to take aligned crops only.
        backend: ``auto``, ``torch`` or ``onnxruntime``
            (:func:`~lafslib.evaluation.runtime.load_embedding_model`).
        device: where the model runs (``cpu``, ``cuda``).
        batch_size: crops per forward pass.
        flip: add the embedding of the mirrored crop (flip test); None: as the threshold
            report was measured, else off.
        threshold: a cosine similarity, ``REPORT.json@FAR`` or a :class:`Threshold`
            (:func:`~lafslib.inference.thresholds.load_threshold`); a report of another model
            is refused.
        max_faces: keep at most this many faces per photo, largest first (0: all).
        detector_kwargs: options of a detector built by name.
        allow_ssl: accept a pretraining export (self-supervised feature, no embedding head).

    Raises:
        ExportError, InputNotFoundError: the export is missing, damaged or has no head.
        ThresholdError: the threshold cannot be used with this model.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        detector: str | Any | None = DEFAULT_DETECTOR,
        *,
        backend: str = "auto",
        device: str = "cpu",
        batch_size: int = 64,
        flip: bool | None = None,
        threshold: str | float | Threshold | None = None,
        max_faces: int = 0,
        detector_kwargs: dict[str, Any] | None = None,
        allow_ssl: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_faces < 0:
            raise ValueError(f"max_faces must be >= 0 (0: all faces), got {max_faces}")
        self.device = device
        self.batch_size = int(batch_size)
        self.max_faces = int(max_faces)
        self.source: str | None = None
        self._identity: dict[str, Any] | None = None
        if isinstance(model, (str, os.PathLike)):
            from lafslib.evaluation.runtime import load_embedding_model

            self.source = os.fspath(model)
            folder = _export_folder(model)
            if folder is not None:
                _check_has_head(folder, allow_ssl)
            self.model = load_embedding_model(self.source, backend, device)
        else:
            self.model = model
        cfg = getattr(self.model, "pretrained_cfg", None)
        size = tuple(getattr(cfg, "input_size", (3, 112, 112)))
        if size[1] != size[2]:
            raise ExportError(f"{self.source or 'model'}: input {size} is not square")
        self.input_size = int(size[1])
        self.needs_keypoints = bool(getattr(cfg, "needs_keypoints", False))
        self.backend = getattr(self.model, "backend", "torch")
        self.threshold = None if threshold is None else load_threshold(threshold, self.identity)
        report_flip = None if self.threshold is None else self.threshold.flip
        self.flip = bool(flip) if flip is not None else bool(report_flip)
        self.detector_kwargs = dict(detector_kwargs or {})
        self._detector = detector
        self._built: Any = None

    # ------------------------------------------------------------------ parts

    @property
    def identity(self) -> dict[str, Any] | None:
        """The model's identity (name, feature, weight hash); None for a model object."""
        if self._identity is None and self.source is not None:
            from lafslib.evaluation.identity import model_identity

            folder = _export_folder(self.source)
            self._identity = None if folder is None else model_identity(folder)
        return self._identity

    @property
    def detector(self) -> Any:
        """The face detector, built on first use."""
        if self._detector is None:
            raise ValueError("this FaceEmbedder has no detector: give aligned crops")
        if self._built is None:
            if isinstance(self._detector, str):
                from lafslib.landmarks.detectors import create_detector

                self._built = create_detector(self._detector, **self.detector_kwargs)
            else:
                self._built = self._detector
        return self._built

    @property
    def detector_name(self) -> str:
        """The detector's name, for messages (``none`` for aligned crops only)."""
        det = self._detector
        if det is None or isinstance(det, str):
            return str(det).lower()
        return str(getattr(det, "name", type(det).__name__))

    @property
    def detector_spec(self) -> Any:
        """What builds the detector in another process: its name when built by name (with
        :attr:`detector_kwargs`), else the detector object itself (None: aligned crops only)."""
        return self._detector

    def __repr__(self) -> str:
        return (
            f"FaceEmbedder({self.source or type(self.model).__name__!s}, detector="
            f"{self.detector_name}, backend="
            f"{self.backend}, input {self.input_size}, flip={self.flip})"
        )

    # ------------------------------------------------------------------ steps

    def detect(self, image: np.ndarray) -> list[Any]:
        """Faces (``lafslib.landmarks.detectors.Face``) of one RGB photo, largest first,
        at most ``max_faces``."""
        return detect_faces(image, self.detector, self.max_faces)

    def embed_aligned(
        self, crops: np.ndarray | Sequence[np.ndarray], keypoints: np.ndarray | None = None
    ) -> np.ndarray:
        """Unit embeddings of aligned crops.

        Args:
            crops: uint8 (N, S, S, 3) RGB crops at the model's input size.
            keypoints: (N, 5, 2) in [0, 1] for KP-RPE models (the ArcFace template if None).

        Returns:
            float32 (N, D), each row of unit L2 norm.
        """
        from lafslib.evaluation.embed import embed_images

        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise DataError(
                f"aligned crops must be (N, {self.input_size}, {self.input_size}, 3), "
                f"got {crops.shape}"
            )
        if not self.needs_keypoints:
            keypoints = None
        emb = embed_images(
            self.model, crops, self.batch_size, self.flip, self.device, keypoints=keypoints
        )
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    # ------------------------------------------------------------------ answers

    def get(
        self, photos: Photo | Sequence[Photo], aligned: bool = False
    ) -> list[EmbeddedFace] | list[list[EmbeddedFace]]:
        """Faces of one photo or of many.

        Args:
            photos: a path, a uint8 RGB array (H, W, 3) or a PIL image; or a list of them, or
                a (N, H, W, 3) array.
            aligned: the photos are crops already aligned at the model's input size (no
                detection; box = the whole crop, landmarks = the template, score NaN).

        Returns:
            For one photo, its faces (largest first; empty when none is found); for many, one
            such list per photo. Crops of all photos are embedded together in batches.

        Raises:
            BadImageError, InputNotFoundError: a file that cannot be read.
            DataError: an input that is not a photo, or an aligned crop of the wrong size.
        """
        items, single = split_batch(photos)
        parts, owners = [], []
        detector = None if aligned else self.detector
        for i, photo in enumerate(items):
            found = prepare_faces(
                as_rgb(photo, i), detector, self.input_size, self.max_faces, photo_name(photo, i)
            )
            parts.append(found)
            owners += [i] * len(found.scores)
        out: list[list[EmbeddedFace]] = [[] for _ in items]
        if owners:
            faces = PreparedFaces.concat(parts)
            emb = self.embed_aligned(faces.crops, faces.keypoints)
            for j, owner in enumerate(owners):
                box, points, score = faces.boxes[j], faces.landmarks[j], float(faces.scores[j])
                out[owner].append(EmbeddedFace(box, points, score, emb[j], owner))
        return out[0] if single else out

    def face(self, photo: Photo, aligned: bool = False, index: int = 0) -> EmbeddedFace:
        """The largest face of one photo.

        Raises:
            NoFaceError: the detector finds none (one line naming the photo and the detector).
        """
        faces = self.get(photo, aligned)
        if not faces:
            raise NoFaceError(f"{photo_name(photo, index)}: no face found ({self._describe()})")
        return faces[0]

    def _describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.detector_kwargs.items())
        return f"detector {self.detector_name}" + (f", {options}" if options else "")

    def verify(self, a: Photo, b: Photo, aligned: bool = False) -> Verification:
        """Compare the largest face of two photos.

        Returns:
            A :class:`Verification`: similarity, and the decision when the embedder has a
            threshold.

        Raises:
            NoFaceError: a photo without a face.
        """
        found = self.get([a, b], aligned)
        for i, (photo, faces) in enumerate(zip((a, b), found)):
            if not faces:
                raise NoFaceError(f"{photo_name(photo, i)}: no face found ({self._describe()})")
        fa, fb = found[0][0], found[1][0]
        similarity = fa.similarity(fb)
        same = None if self.threshold is None else bool(similarity >= self.threshold.value)
        return Verification(
            similarity, self.threshold, same, (fa, fb), (len(found[0]), len(found[1]))
        )
