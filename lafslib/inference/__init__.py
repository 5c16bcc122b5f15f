"""Inference: photos -> faces -> embeddings (:class:`FaceEmbedder`), decision thresholds from
evaluation reports, embeddings files and search."""

from lafslib.inference.embedder import (
    DEFAULT_DETECTOR,
    EmbeddedFace,
    FaceEmbedder,
    NoFaceError,
    Verification,
)
from lafslib.inference.thresholds import Threshold, ThresholdError, load_threshold

__all__ = [
    "DEFAULT_DETECTOR",
    "EmbeddedFace",
    "FaceEmbedder",
    "NoFaceError",
    "Threshold",
    "ThresholdError",
    "Verification",
    "load_threshold",
]
