"""Inference: photos -> faces -> embeddings (:class:`FaceEmbedder`), decision thresholds from
evaluation reports, embeddings files and search."""

from lafslib.inference.collection import EmbedReport, embed_collection, embed_in_memory
from lafslib.inference.embedder import (
    DEFAULT_DETECTOR,
    EmbeddedFace,
    FaceEmbedder,
    NoFaceError,
    Verification,
)
from lafslib.inference.matches import SearchResult, search_report
from lafslib.inference.search import search
from lafslib.inference.store import Embeddings, load_embeddings
from lafslib.inference.thresholds import Threshold, ThresholdError, load_threshold

__all__ = [
    "DEFAULT_DETECTOR",
    "EmbedReport",
    "EmbeddedFace",
    "Embeddings",
    "FaceEmbedder",
    "NoFaceError",
    "SearchResult",
    "Threshold",
    "ThresholdError",
    "Verification",
    "embed_collection",
    "embed_in_memory",
    "load_embeddings",
    "load_threshold",
    "search",
    "search_report",
]
