"""Landmark sidecar files: per-image landmarks stored next to a dataset.

Two forms, both in pixel coordinates of the (aligned) images:

- CSV (``landmarks5.csv``-style): a header ``path,x0,y0,...,x{K-1},y{K-1}`` then one row per
  image with its path relative to the dataset root;
- NPZ: arrays ``keys`` (relative paths as strings, or record indices as integers) and
  ``points`` (N, K, 2) float32, for RecordIO datasets or large sets.

Loading validates the point count, NaN/inf values and the range against the image size, and
raises :class:`LandmarkFileError` naming the file and the row.

A loaded :class:`LandmarkTable` holds no Python object per image: the keys are one numpy array
(integers, or UTF-8 bytes for paths; nothing at all for consecutive record indices) searched
with :func:`numpy.searchsorted`, and the points of a large uncompressed ``.npz`` are
memory-mapped from the file. DataLoader workers forked from the process that loaded it share
those pages instead of copying them as they read.
"""

from __future__ import annotations

import array
import csv
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from lafslib.errors import DataError, InputNotFoundError
from lafslib.io.npz import npz_member_map

__all__ = ["LandmarkFileError", "LandmarkTable", "load_landmarks", "save_landmarks"]

MMAP_MIN_BYTES = 8 << 20  # points of an .npz at least this large are memory-mapped
_CHUNK = 1 << 16  # rows per chunk of vectorised checks (bounds their temporary arrays)


class LandmarkFileError(DataError):
    """A landmark sidecar is malformed; the message names the file and the row."""


class LandmarkTable(Mapping):
    """Mapping from relative path (str) or record index (int) to float32 (K, 2) pixel points.

    Args:
        keys: (N,) the key of each row: relative paths (``str``) or record indices (``int``),
            as a sequence or a numpy array (integers, ``str`` or UTF-8 ``bytes``).
        points: (N, K, 2) pixel coordinates (a memory map is kept as it is).
        source: the file, for messages.

    Raises:
        LandmarkFileError: shapes disagree or a key appears twice.
    """

    def __init__(
        self, keys: Sequence[str | int] | np.ndarray, points: np.ndarray, source: str = ""
    ) -> None:
        if points.ndim != 3 or points.shape[2] != 2 or len(keys) != len(points):
            raise LandmarkFileError(
                f"{source}: expected points of shape (N, K, 2) for {len(keys)} keys, "
                f"got {points.shape}"
            )
        self.points = points.astype(np.float32, copy=False)
        self.source = source
        arr = _key_array(keys)
        self.integer_keys = arr.dtype.kind in "iu"
        self._start: int | None = None  # keys start, start + 1, ...: no key array at all
        self._keys: np.ndarray | None = arr
        self._order: np.ndarray | None = None  # argsort of unsorted keys
        n = len(arr)
        if self.integer_keys and n and int(arr[-1]) - int(arr[0]) == n - 1 and _increasing(arr):
            self._start, self._keys = int(arr[0]), None
        elif not _increasing(arr):
            self._order = np.argsort(arr, kind="stable")
            if n > 1 and _has_equal_neighbours(arr, self._order):
                raise LandmarkFileError(f"{source}: duplicate keys in landmark file")

    @property
    def num_points(self) -> int:
        """Points per image (K)."""
        return int(self.points.shape[1])

    @property
    def keys_array(self) -> np.ndarray:
        """(N,) the keys in file order: int64 record indices or UTF-8 ``bytes`` paths."""
        if self._start is not None:
            return np.arange(self._start, self._start + len(self.points), dtype=np.int64)
        assert self._keys is not None
        return self._keys

    def row(self, key: object) -> int:
        """The row of ``key`` (-1 when absent)."""
        probe = _probe(key, self.integer_keys)
        if probe is None:
            return -1
        if self._start is not None:
            i = int(probe) - self._start
            return i if 0 <= i < len(self.points) else -1
        assert self._keys is not None
        n = len(self._keys)
        pos = int(np.searchsorted(self._keys, probe, sorter=self._order))
        if pos >= n:
            return -1
        i = int(self._order[pos]) if self._order is not None else pos
        return i if self._keys[i] == probe else -1

    def rows(self, keys: Iterable[str | int] | np.ndarray) -> np.ndarray:
        """(M,) int64 rows of many keys at once (-1 for each absent key).

        Args:
            keys: relative paths or record indices (a numpy array is searched without a
                Python object per key).
        """
        arr = keys if isinstance(keys, np.ndarray) else _key_array(list(keys))
        out = np.full(len(arr), -1, dtype=np.int64)
        if (arr.dtype.kind in "iu") != self.integer_keys or not len(arr):
            return out
        if arr.dtype.kind == "U":
            arr = np.char.encode(arr, "utf-8")
        for lo in range(0, len(arr), _CHUNK):
            part = arr[lo : lo + _CHUNK]
            if self._start is not None:
                i = part.astype(np.int64) - self._start
                ok = (i >= 0) & (i < len(self.points))
                out[lo : lo + _CHUNK] = np.where(ok, i, -1)
                continue
            assert self._keys is not None
            pos = np.searchsorted(self._keys, part, sorter=self._order)
            pos = np.minimum(pos, len(self._keys) - 1)
            i = self._order[pos] if self._order is not None else pos
            out[lo : lo + _CHUNK] = np.where(self._keys[i] == part, i, -1)
        return out

    def __getitem__(self, key: str | int) -> np.ndarray:
        i = self.row(key)
        if i < 0:
            raise KeyError(key)
        return self.points[i]

    def __contains__(self, key: object) -> bool:
        return self.row(key) >= 0

    def __iter__(self) -> Iterator[str | int]:
        for lo in range(0, len(self), _CHUNK):
            part = self.keys_array[lo : lo + _CHUNK]
            if self.integer_keys:
                yield from part.tolist()
            else:
                yield from (k.decode("utf-8") for k in part.tolist())

    def __len__(self) -> int:
        return len(self.points)


def _key_array(keys: Sequence[str | int] | np.ndarray) -> np.ndarray:
    """Keys as int64 or normalised UTF-8 bytes (``./`` and the OS separator removed)."""
    arr = keys if isinstance(keys, np.ndarray) else None
    if arr is None:
        if all(isinstance(k, (int, np.integer)) for k in keys):
            return np.asarray(keys, dtype=np.int64).reshape(-1)
        arr = np.array([_norm_path(str(k)).encode("utf-8") for k in keys], dtype=bytes)
        return arr.reshape(-1) if len(arr) else np.zeros(0, dtype="S1")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False).reshape(-1)
    if arr.dtype.kind == "U":
        arr = np.char.encode(arr, "utf-8")
    if arr.dtype.kind != "S":
        raise LandmarkFileError(f"landmark keys must be paths or record indices, not {arr.dtype}")
    if os.sep != "/":
        arr = np.char.replace(arr, os.sep.encode(), b"/")
    dotted = np.char.startswith(arr, b"./")
    if dotted.any():
        arr = arr.copy()
        arr[dotted] = [k[2:] for k in arr[dotted].tolist()]
    return arr.reshape(-1)


def _increasing(arr: np.ndarray) -> bool:
    """Every key above the one before it (chunked: no temporary as long as ``arr``)."""
    n = len(arr) - 1
    return all(
        bool(np.all(arr[lo + 1 : min(lo + _CHUNK, n) + 1] > arr[lo : min(lo + _CHUNK, n)]))
        for lo in range(0, max(n, 0), _CHUNK)
    )


def _has_equal_neighbours(arr: np.ndarray, order: np.ndarray) -> bool:
    n = len(arr) - 1
    return any(
        bool(
            np.any(
                arr[order[lo + 1 : min(lo + _CHUNK, n) + 1]] == arr[order[lo : min(lo + _CHUNK, n)]]
            )
        )
        for lo in range(0, n, _CHUNK)
    )


def _norm_path(key: str) -> str:
    key = key.replace(os.sep, "/")
    return key[2:] if key.startswith("./") else key


def _probe(key: object, integer_keys: bool) -> int | bytes | None:
    """The searchable form of ``key`` in a table of integer or path keys (None: never there)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key) if integer_keys else None
    if isinstance(key, str) and not integer_keys:
        return _norm_path(key).encode("utf-8")
    return None


def _key_name(keys: Sequence | np.ndarray, i: int) -> str:
    k = keys[i]
    return k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)


def _validate(points: np.ndarray, keys: Sequence, source: str, image_size: int | None) -> None:
    """Raise on the first row with a non-finite point or (with ``image_size``) a point far
    outside the image; checked in chunks so that no temporary array is as large as ``points``."""
    margin = None if image_size is None else 0.5 * image_size  # loose crops overshoot a little
    for lo in range(0, len(points), _CHUNK):
        part = np.asarray(points[lo : lo + _CHUNK])
        bad = ~np.isfinite(part).all(axis=(1, 2))
        if bad.any():
            i = lo + int(np.argmax(bad))
            raise LandmarkFileError(
                f"{source}: row {i + 1} ({_key_name(keys, i)}): NaN or infinite landmark"
            )
        if margin is None:
            continue
        out = ((part < -margin) | (part > image_size + margin)).any(axis=(1, 2))
        if out.any():
            i = lo + int(np.argmax(out))
            raise LandmarkFileError(
                f"{source}: row {i + 1} ({_key_name(keys, i)}): landmark outside the "
                f"{image_size}px image: {points[i].round(1).tolist()}"
            )


def load_landmarks(
    path: str | os.PathLike[str], num_points: int | None = None, image_size: int | None = None
) -> LandmarkTable:
    """Load and validate a landmark sidecar (``.csv`` or ``.npz``).

    The points of an uncompressed ``.npz`` (what :func:`save_landmarks` writes) of at least
    :data:`MMAP_MIN_BYTES` are memory-mapped, not read.

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


def _read(path: Path, source: str) -> tuple[np.ndarray | list[str], np.ndarray]:
    if path.suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise LandmarkFileError(f"{source}: not an .npz file (no zip archive)")
        with np.load(path, allow_pickle=False) as data:
            if "keys" not in data or "points" not in data:
                raise LandmarkFileError(f"{source}: an .npz sidecar needs 'keys' and 'points'")
            raw_keys = data["keys"]
            points = npz_member_map(path, "points", MMAP_MIN_BYTES)
            if points is None or points.dtype != np.float32:
                points = np.asarray(data["points"], dtype=np.float32)
        if raw_keys.dtype.kind not in "iuUS":
            raise LandmarkFileError(f"{source}: 'keys' must be paths or record indices")
        return raw_keys.reshape(-1), points
    keys: list[str] = []
    values = array.array("f")  # compact: no Python float per coordinate
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[0] != "path" or (len(header) - 1) % 2:
            raise LandmarkFileError(f"{source}: header must be 'path,x0,y0,...', got {header!r}")
        k = (len(header) - 1) // 2
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise LandmarkFileError(
                    f"{source}: line {line_no}: expected {len(header)} fields, got {len(row)}"
                )
            try:
                values.extend([float(v) for v in row[1:]])
            except ValueError:
                raise LandmarkFileError(
                    f"{source}: line {line_no} ({row[0]}): non-numeric coordinate"
                ) from None
            keys.append(row[0])
    return keys, np.frombuffer(values, dtype=np.float32).reshape(len(keys), k, 2).copy()


def save_landmarks(
    path: str | os.PathLike[str], keys: Sequence[str | int] | np.ndarray, points: np.ndarray
) -> Path:
    """Write a sidecar: ``.csv`` (path keys) or ``.npz`` (paths or record indices).

    An ``.npz`` is stored uncompressed, so that :func:`load_landmarks` can memory-map it.

    Args:
        path: output file; its suffix picks the form.
        keys: (N,) relative image paths or record indices, one per row.
        points: (N, K, 2) pixel coordinates.
    """
    path = Path(path)
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] != 2 or len(points) != len(keys):
        raise ValueError(f"points must be (N, K, 2) for {len(keys)} keys, got {points.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".npz":
        if isinstance(keys, np.ndarray):
            if keys.dtype.kind in "iu":
                arr = keys.astype(np.int64)
            else:
                arr = np.char.decode(keys, "utf-8") if keys.dtype.kind == "S" else keys.astype(str)
        else:
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
