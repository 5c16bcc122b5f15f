"""Embeddings files: ``NAME.npy`` (unit embeddings) + ``NAME.csv`` (index) + ``NAME.json`` (meta).

``NAME.npy`` holds one row per face, float32 or float16, each of unit L2 norm (numpy's own
format, memory-mapped when read, so a search streams it). ``NAME.csv`` gives per row the photo
(its path relative to the source folder, or ``rec:KEY`` for a record), the face's index in it
(0 = largest), the detector score, the box ``x0, y0, x1, y1`` and the 5 landmarks in photo
pixels. ``NAME.json`` records the model (and its identity), the options, and the photos where
no face was found or that could not be read.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.errors import DataError, InputNotFoundError

__all__ = ["Embeddings", "index_paths", "load_embeddings", "write_index"]

_COLUMNS = ["path", "face", "score", "x0", "y0", "x1", "y1"] + [
    f"p{i}{axis}" for i in range(5) for axis in "xy"
]


def index_paths(npy: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(NAME.csv, NAME.json)`` beside ``NAME.npy``."""
    npy = Path(npy)
    return npy.with_suffix(".csv"), npy.with_suffix(".json")


@dataclass
class Embeddings:
    """An embeddings file, read.

    Attributes:
        vectors: (N, D) float32/float16 unit rows (memory-mapped from ``.npy``).
        paths: N photo names (relative paths, or ``rec:KEY``).
        faces: (N,) face index within its photo (0 = largest).
        scores: (N,) detector scores (NaN for aligned input).
        boxes: (N, 4) ``x0, y0, x1, y1`` photo pixels.
        landmarks: (N, 5, 2) photo pixels.
        meta: the ``.json`` sidecar (model, options, photos without a face).
    """

    vectors: np.ndarray
    paths: list[str]
    faces: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def labels(self) -> list[str]:
        """Each row's identity as its photo's parent folder (``""`` at the top level)."""
        return [p.rsplit("/", 1)[0] if "/" in p else "" for p in self.paths]


def write_index(path: Path, rows: dict[str, np.ndarray]) -> None:
    """Write the ``.csv`` index (atomically) from arrays ``paths, faces, scores, boxes,
    landmarks``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(_COLUMNS)
        for i, name in enumerate(rows["paths"]):
            writer.writerow(
                [str(name), int(rows["faces"][i]), f"{float(rows['scores'][i]):.6g}"]
                + [f"{v:.2f}" for v in rows["boxes"][i]]
                + [f"{v:.2f}" for v in np.asarray(rows["landmarks"][i]).reshape(-1)]
            )
    os.replace(tmp, path)


def load_embeddings(npy: str | os.PathLike[str], mmap: bool = True) -> Embeddings:
    """Read an embeddings file written by ``lafs embed``.

    Raises:
        InputNotFoundError: no such ``.npy``, or its ``.csv`` index is missing.
        DataError: the index and the array disagree, or the array is not (N, D) float.
    """
    npy = Path(npy)
    index, meta_path = index_paths(npy)
    if not npy.is_file():
        raise InputNotFoundError(f"embeddings file not found: {npy}")
    if not index.is_file():
        raise InputNotFoundError(
            f"{npy}: its index {index.name} is missing (write it with lafs embed)"
        )
    try:
        vectors = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{npy}: not a numpy array file ({exc})") from None
    if vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise DataError(
            f"{npy}: expected (N, D) float embeddings, got {vectors.shape} {vectors.dtype}"
        )
    with index.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != _COLUMNS:
            raise DataError(f"{index}: not an embeddings index (header {header})")
        rows = list(reader)
    if len(rows) != len(vectors):
        raise DataError(f"{index}: {len(rows)} rows but {npy.name} has {len(vectors)} embeddings")
    numbers = np.array([r[1:] for r in rows], dtype=np.float64).reshape(
        len(rows), len(_COLUMNS) - 1
    )
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return Embeddings(
        vectors=vectors,
        paths=[r[0] for r in rows],
        faces=numbers[:, 0].astype(np.int64),
        scores=numbers[:, 1],
        boxes=numbers[:, 2:6],
        landmarks=numbers[:, 6:].reshape(-1, 5, 2),
        meta=meta,
    )
