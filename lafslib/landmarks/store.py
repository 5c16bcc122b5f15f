"""Landmark sidecar files: per-image landmarks stored next to a dataset.

Two forms, both in pixel coordinates of the (aligned) images:

- CSV (``landmarks5.csv``-style): a header ``path,x0,y0,...,x{K-1},y{K-1}`` then one row per
  image with its path relative to the dataset root;
- NPZ: arrays ``keys`` (relative paths as strings, or record indices as integers) and
  ``points`` (N, K, 2) float32, for RecordIO datasets or large sets.

Loading validates the point count, NaN/inf values and the range against the image size, and
raises :class:`LandmarkFileError` naming the file and the row.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from lafslib.errors import DataError, InputNotFoundError

__all__ = ["LandmarkFileError", "LandmarkTable", "load_landmarks", "save_landmarks"]


class LandmarkFileError(DataError):
    """A landmark sidecar is malformed; the message names the file and the row."""


class LandmarkTable(Mapping):
    """Mapping from relative path (str) or record index (int) to float32 (K, 2) pixel points."""

    def __init__(self, keys: Sequence[str | int], points: np.ndarray, source: str = "") -> None:
        if points.ndim != 3 or points.shape[2] != 2 or len(keys) != len(points):
            raise LandmarkFileError(
                f"{source}: expected points of shape (N, K, 2) for {len(keys)} keys, "
                f"got {points.shape}"
            )
        self.points = points.astype(np.float32, copy=False)
        self.keys_list = list(keys)
        self.source = source
        self._index = {_norm_key(k): i for i, k in enumerate(self.keys_list)}
        if len(self._index) != len(self.keys_list):
            raise LandmarkFileError(f"{source}: duplicate keys in landmark file")

    @property
    def num_points(self) -> int:
        """Points per image (K)."""
        return int(self.points.shape[1])

    def __getitem__(self, key: str | int) -> np.ndarray:
        return self.points[self._index[_norm_key(key)]]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (str, int, np.integer)) and _norm_key(key) in self._index

    def __iter__(self) -> Iterator[str | int]:
        return iter(self.keys_list)

    def __len__(self) -> int:
        return len(self.keys_list)


def _norm_key(key: str | int) -> str | int:
    if isinstance(key, (int, np.integer)):
        return int(key)
    key = str(key).replace(os.sep, "/")
    return key[2:] if key.startswith("./") else key


def _validate(points: np.ndarray, keys: Sequence, source: str, image_size: int | None) -> None:
    bad = ~np.isfinite(points).all(axis=(1, 2))
    if bad.any():
        i = int(np.argmax(bad))
        raise LandmarkFileError(f"{source}: row {i + 1} ({keys[i]}): NaN or infinite landmark")
    if image_size is not None:
        margin = 0.5 * image_size  # loose crops may put points slightly outside the frame
        out = ((points < -margin) | (points > image_size + margin)).any(axis=(1, 2))
        if out.any():
            i = int(np.argmax(out))
            raise LandmarkFileError(
                f"{source}: row {i + 1} ({keys[i]}): landmark outside the {image_size}px image: "
                f"{points[i].round(1).tolist()}"
            )


def load_landmarks(
    path: str | os.PathLike[str], num_points: int | None = None, image_size: int | None = None
) -> LandmarkTable:
    """Load and validate a landmark sidecar (``.csv`` or ``.npz``).

    Args:
        path: sidecar file.
        num_points: expected K (5, 68, 196, ...); None accepts any.
        image_size: when given, points far outside ``[0, image_size]`` are errors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"landmark file not found: {path}")
    source = str(path)
    try:
        keys, points = _read(path, source)
    except LandmarkFileError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # pickles, bad zip, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LandmarkFileError(f"{source}: not a readable landmark file ({reason})") from None
    if points.ndim != 3 or points.shape[2] != 2:
        raise LandmarkFileError(f"{source}: expected points of shape (N, K, 2), got {points.shape}")
    if num_points is not None and points.shape[1] != num_points:
        raise LandmarkFileError(
            f"{source}: expected {num_points} points per image, found {points.shape[1]}"
        )
    _validate(points, keys, source, image_size)
    return LandmarkTable(keys, points, source)


def _read(path: Path, source: str) -> tuple[list[str | int], np.ndarray]:
    if path.suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise LandmarkFileError(f"{source}: not an .npz file (no zip archive)")
        with np.load(path, allow_pickle=False) as data:
            if "keys" not in data or "points" not in data:
                raise LandmarkFileError(f"{source}: an .npz sidecar needs 'keys' and 'points'")
            raw_keys = data["keys"]
            points = np.asarray(data["points"], dtype=np.float32)
        keys: list[str | int] = (
            [int(k) for k in raw_keys]
            if raw_keys.dtype.kind in "iu"
            else [str(k) for k in raw_keys]
        )
    else:
        keys, rows = [], []
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or header[0] != "path" or (len(header) - 1) % 2:
                raise LandmarkFileError(
                    f"{source}: header must be 'path,x0,y0,...', got {header!r}"
                )
            k = (len(header) - 1) // 2
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise LandmarkFileError(
                        f"{source}: line {line_no}: expected {len(header)} fields, got {len(row)}"
                    )
                try:
                    rows.append([float(v) for v in row[1:]])
                except ValueError:
                    raise LandmarkFileError(
                        f"{source}: line {line_no} ({row[0]}): non-numeric coordinate"
                    ) from None
                keys.append(row[0])
        points = np.asarray(rows, dtype=np.float32).reshape(len(rows), k, 2)
    return keys, points


def save_landmarks(
    path: str | os.PathLike[str], keys: Sequence[str | int], points: np.ndarray
) -> Path:
    """Write a sidecar: ``.csv`` (path keys) or ``.npz`` (paths or record indices).

    Args:
        path: output file; its suffix picks the form.
        keys: relative image paths or record indices, one per row.
        points: (N, K, 2) pixel coordinates.
    """
    path = Path(path)
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] != 2 or len(points) != len(keys):
        raise ValueError(f"points must be (N, K, 2) for {len(keys)} keys, got {points.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".npz":
        int_keys = all(isinstance(k, (int, np.integer)) for k in keys)
        arr = np.asarray(keys, dtype=np.int64 if int_keys else str)
        with tmp.open("wb") as f:
            np.savez(f, keys=arr, points=points)
    else:
        k = points.shape[1]
        header = ["path"] + [f"{a}{i}" for i in range(k) for a in ("x", "y")]
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for key, pts in zip(keys, points):
                writer.writerow([str(key)] + [f"{v:.3f}" for v in pts.reshape(-1)])
    os.replace(tmp, path)
    return path
