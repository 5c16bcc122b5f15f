"""insightface RecordIO (``.rec`` + ``.idx``) reader and writer, without mxnet.

Framing (MXNet RecordIO): each record is ``uint32 magic 0xced7230a``, ``uint32 lrecord``
(``cflag = lrecord >> 29``, ``length = lrecord & (2**29 - 1)``), the payload, and zero padding
to a multiple of 4 bytes. A payload that contains the magic word at a 4-byte boundary is split
into parts (cflag 1 = first, 2 = middle, 3 = last) and re-joined with the magic word on read.
The ``.idx`` file is text, ``key<TAB>byte offset`` per line; it is read into numpy arrays
(:class:`RecordIndex`), as are the labels, so that a pool of millions of records holds no
Python object per record.

Payload: ``IRHeader`` = struct ``<IfQQ`` (flag, label, id, id2); when ``flag > 0`` it is followed
by ``flag`` float32 labels; then the encoded image.

insightface layout: record 0 has ``flag=2`` and labels ``[A, B]``; records ``1 .. A-1`` are
images (label = identity); records ``A .. B-1`` are one per identity, labels ``[start, end)``
giving that identity's image keys. The flat layout has no header record: every key is an image.

Example:
    >>> pack_folder("faces/identities", "faces.rec")  # doctest: +SKIP
    >>> ds = RecordIODataset("faces.rec")  # doctest: +SKIP
"""

from __future__ import annotations

import array
import csv
import os
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lafslib.data.base import FaceDataset
from lafslib.data.record_index import RecordIndex
from lafslib.errors import DataError, InputNotFoundError
from lafslib.io import BadImageError, decode_image

__all__ = [
    "IRHeader",
    "pack_record",
    "unpack_record",
    "RecordIndex",
    "RecordWriter",
    "RecordReader",
    "RecordIODataset",
    "pack_folder",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_HEADER = struct.Struct("<IfQQ")
_FAST_HEAD = struct.Struct("<IIIf")  # magic, lrecord, then the header's flag and label
_CHUNK = 1 << 16


@dataclass
class IRHeader:
    """Image record header: ``flag`` extra float labels, scalar ``label``, ids."""

    flag: int
    label: float | np.ndarray
    id: int = 0
    id2: int = 0


def pack_record(header: IRHeader, data: bytes = b"") -> bytes:
    """Serialise a header (scalar or array label) and payload bytes."""
    label = header.label
    if isinstance(label, (int, float, np.floating, np.integer)):
        return _HEADER.pack(0, float(label), header.id, header.id2) + data
    labels = np.asarray(label, dtype=np.float32).reshape(-1)
    return _HEADER.pack(len(labels), 0.0, header.id, header.id2) + labels.tobytes() + data


def unpack_record(payload: bytes) -> tuple[IRHeader, bytes]:
    """Split a record payload into its header and the remaining bytes."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"record of {len(payload)} bytes is shorter than its header")
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    rest = payload[_HEADER.size :]
    if flag > 0:
        n = 4 * flag
        if len(rest) < n:
            raise ValueError(f"record declares {flag} labels but holds {len(rest)} bytes")
        return IRHeader(flag, np.frombuffer(rest[:n], dtype=np.float32).copy(), id_, id2), rest[n:]
    return IRHeader(0, label, id_, id2), rest


class RecordWriter:
    """Append records to ``.rec`` and their offsets to ``.idx`` (written atomically on close)."""

    def __init__(self, rec_path: str | os.PathLike[str], idx_path: str | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_rec = self.rec_path.with_name(self.rec_path.name + ".tmp")
        self._f: BinaryIO = self._tmp_rec.open("wb")
        self._keys = array.array("q")  # compact: no Python object per record
        self._offsets = array.array("q")

    def _write_part(self, cflag: int, data: bytes) -> None:
        self._f.write(struct.pack("<II", MAGIC, (cflag << 29) | len(data)))
        self._f.write(data)
        self._f.write(b"\0" * (-len(data) % 4))

    def write(self, key: int, payload: bytes) -> None:
        """Write one record under integer ``key``."""
        self._keys.append(key)
        self._offsets.append(self._f.tell())
        cuts = _magic_cuts(payload)
        if not cuts:
            self._write_part(0, payload)
            return
        starts = [0] + [c + 4 for c in cuts]
        ends = cuts + [len(payload)]
        for j, (a, b) in enumerate(zip(starts, ends)):
            cflag = 1 if j == 0 else (3 if j == len(starts) - 1 else 2)
            self._write_part(cflag, payload[a:b])

    def close(self) -> None:
        """Flush both files and move them into place."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        tmp_idx = self.idx_path.with_name(self.idx_path.name + ".tmp")
        with tmp_idx.open("w") as f:
            for lo in range(0, len(self._keys), _CHUNK):
                keys, offsets = self._keys[lo : lo + _CHUNK], self._offsets[lo : lo + _CHUNK]
                f.write("".join(f"{k}\t{off}\n" for k, off in zip(keys, offsets)))
        os.replace(self._tmp_rec, self.rec_path)
        os.replace(tmp_idx, self.idx_path)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._f.close()
            self._tmp_rec.unlink(missing_ok=True)


def _magic_cuts(payload: bytes) -> list[int]:
    """Positions (multiples of 4) where ``payload`` holds the magic word."""
    cuts, pos = [], payload.find(_MAGIC_BYTES)
    while pos >= 0:
        if pos % 4 == 0:
            cuts.append(pos)
            pos = payload.find(_MAGIC_BYTES, pos + 4)
        else:
            pos = payload.find(_MAGIC_BYTES, pos + 1)
    return cuts


class RecordReader:
    """Random access to a ``.rec`` file; one file handle per process (DataLoader-worker safe).

    Attributes:
        offsets: the :class:`RecordIndex` (key -> byte offset), from the ``.idx`` or a scan.
        keys: the sorted record keys (a ``range`` or an int64 array).
    """

    def __init__(self, rec_path: str | os.PathLike[str], idx_path: str | None = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise InputNotFoundError(f"RecordIO file not found: {self.rec_path}")
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        if self.idx_path.is_file():
            self.offsets = self._read_idx()
        else:
            self.offsets = self._scan()
        self.keys: Sequence[int] = self.offsets.key_sequence()
        self._handle: BinaryIO | None = None
        self._pid = -1

    def _read_idx(self) -> RecordIndex:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an empty file: handled below
                table = np.loadtxt(
                    self.idx_path, dtype=np.int64, delimiter="\t", ndmin=2, comments=None
                )
        except ValueError:
            table = None
        if table is not None and table.shape[1] == 2:
            return RecordIndex(table[:, 0], table[:, 1])
        if table is not None and table.size == 0:
            return RecordIndex(np.zeros(0), np.zeros(0))
        return self._read_idx_lines()

    def _read_idx_lines(self) -> RecordIndex:
        """The slow, line-by-line reading: for lines numpy refuses (the error names the line)."""
        keys, offsets = array.array("q"), array.array("q")
        with self.idx_path.open() as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                try:
                    key, offset = int(parts[0]), int(parts[1])
                except (ValueError, IndexError):
                    raise DataError(
                        f"{self.idx_path}: line {line_no}: expected 'key<TAB>offset'"
                    ) from None
                keys.append(key)
                offsets.append(offset)
        return RecordIndex(np.frombuffer(keys, np.int64), np.frombuffer(offsets, np.int64))

    def _scan(self) -> RecordIndex:
        offsets, key = array.array("q"), 0
        with self.rec_path.open("rb") as f:
            while True:
                pos = f.tell()
                head = f.read(8)
                if len(head) < 8:
                    break
                magic, lrec = struct.unpack("<II", head)
                if magic != MAGIC:
                    raise DataError(f"{self.rec_path}: bad magic at byte {pos}")
                cflag, length = lrec >> 29, lrec & _LEN_MASK
                if cflag in (0, 1):
                    offsets.append(pos)
                    key += 1
                f.seek(length + (-length % 4), os.SEEK_CUR)
        return RecordIndex(np.arange(key, dtype=np.int64), np.frombuffer(offsets, np.int64))

    def _file(self) -> BinaryIO:
        if self._handle is None or self._pid != os.getpid():
            self._handle = self.rec_path.open("rb")
            self._pid = os.getpid()
        return self._handle

    def read(self, key: int) -> bytes:
        """The payload of record ``key``."""
        i = self.offsets.position(key)
        if i < 0:
            raise KeyError(f"{self.rec_path}: no record with key {key}")
        f = self._file()
        f.seek(int(self.offsets.offsets[i]))
        parts = []
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise DataError(f"{self.rec_path}: truncated record {key}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise DataError(f"{self.rec_path}: bad magic in record {key}")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            data = f.read(length)
            if len(data) < length:
                raise DataError(f"{self.rec_path}: truncated record {key}")
            f.seek(-length % 4, os.SEEK_CUR)
            parts.append(data)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def read_header(self, key: int) -> IRHeader:
        """Only the :class:`IRHeader` of record ``key`` (reads a few bytes).

        Raises:
            ValueError: the record's framing is corrupt (bad magic) or its header truncated.
        """
        f = self._file()
        f.seek(self.offsets[key])
        frame = f.read(8)
        if len(frame) < 8 or struct.unpack("<I", frame[:4])[0] != MAGIC:
            raise DataError(f"{self.rec_path}: bad magic in record {key}")
        head = f.read(_HEADER.size)
        flag = _HEADER.unpack_from(head)[0] if len(head) == _HEADER.size else 0
        header, _ = unpack_record(head + f.read(4 * flag))
        return header

    def header_labels(self, keys: Sequence[int]) -> np.ndarray:
        """(len(keys),) float64 scalar label of each record (its first label when it holds
        several; NaN where the framing is unusual: split or truncated), read with one small
        ``pread`` per record into an array, never a Python object per record."""
        out = np.full(len(keys), np.nan)
        fd = self._file().fileno()
        want = 8 + _HEADER.size + 4
        for i, key in enumerate(keys):
            head = os.pread(fd, want, int(self.offsets[key]))
            if len(head) < 8 + _HEADER.size:
                continue
            magic, lrec, flag, label = _FAST_HEAD.unpack_from(head)
            length = lrec & _LEN_MASK
            if magic != MAGIC or lrec >> 29 != 0 or length < _HEADER.size + 4 * flag:
                continue
            if flag == 0:
                out[i] = label
            elif len(head) == want:
                out[i] = struct.unpack_from("<f", head, 8 + _HEADER.size)[0]
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, -1
        return state


class RecordIODataset(FaceDataset):
    """Images of an insightface ``.rec`` (header layout or flat).

    The index, the image keys and the labels are numpy arrays (or ranges), never one Python
    object per record, so pools of millions cost DataLoader workers no copied memory.

    Args:
        rec_path: the ``.rec`` file (``.idx`` beside it, or rebuilt by scanning).
        idx_path: explicit ``.idx`` path.
        landmarks: sidecar keyed by record index (``.npz``) or None.
        transform: callable applied to each sample dict.
    """

    labelled = True

    def __init__(
        self,
        rec_path: str | os.PathLike[str],
        idx_path: str | None = None,
        landmarks: str | os.PathLike[str] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        super().__init__(transform)
        self.reader = RecordReader(rec_path, idx_path)
        self.location = str(self.reader.rec_path)
        if not len(self.reader.keys):
            raise DataError(f"{rec_path}: the RecordIO file holds no records")
        first = int(self.reader.keys[0])
        header, rest = unpack_record(self.reader.read(first))
        labels: np.ndarray | None = None
        self.image_keys: Sequence[int]
        if first == 0 and header.flag > 0 and len(header.label) >= 2 and not rest:
            first_id = int(header.label[0])
            end_id = int(header.label[1])
            self.image_keys = range(1, first_id)
            self.identity_range: tuple[int, int] | None = (first_id, end_id)
            labels = self._identity_labels(first_id, end_id)
        else:
            self.image_keys = self.reader.keys
            self.identity_range = None
        self._labels = labels if labels is not None else self._record_labels()
        if landmarks is not None:
            self.attach_landmarks(landmarks)

    def _identity_labels(self, first_id: int, end_id: int) -> np.ndarray | None:
        """Labels from the identity records (``[start, end)`` of image keys each); None when
        they are corrupt or leave an image without identity."""
        labels = np.full(len(self.image_keys), -1, dtype=np.int32)
        try:
            for ident, key in enumerate(range(first_id, end_id)):
                rng, _ = unpack_record(self.reader.read(key))
                a, b = int(rng.label[0]), int(rng.label[1])
                labels[a - 1 : b - 1] = ident
        except (ValueError, IndexError, TypeError):
            return None  # corrupt identity records: read each image's own label instead
        return labels if bool((labels >= 0).all()) else None

    def _record_labels(self) -> np.ndarray:
        """Each image's label from its own header; a corrupt record gets -1 and is skipped."""
        found = self.reader.header_labels(self.image_keys)
        labels = np.full(len(found), -1, dtype=np.int32)
        ok = np.isfinite(found) & (np.abs(found) < 2**31)
        labels[ok] = found[ok].astype(np.int32)
        for index in np.flatnonzero(~ok).tolist():  # unusual framing: the exact, slow reading
            labels[index] = self._read_label(index, int(self.image_keys[index]))
        return labels

    @property
    def labels(self) -> np.ndarray:
        """(N,) int32 identity label of every image (-1 for a corrupt record)."""
        return self._labels

    @property
    def num_classes(self) -> int:
        """Number of identities (max label + 1)."""
        return int(self._labels.max()) + 1

    def _read_label(self, index: int, key: int) -> int:
        try:
            header = self.reader.read_header(key)
        except ValueError as exc:  # a corrupt record: no label, and skipped like a bad image
            self._bad[index] = f"{exc}"
            self.bad_images.record(BadImageError(str(exc)), str(index))
            return -1
        label = header.label
        return int(label if header.flag == 0 else label[0])

    def __len__(self) -> int:
        return len(self.image_keys)

    def _load(self, index: int) -> tuple[np.ndarray, str]:
        key = int(self.image_keys[index])
        try:
            _, data = unpack_record(self.reader.read(key))
        except ValueError as exc:  # bad magic, truncated record: skipped like a bad JPEG
            raise BadImageError(f"{self.reader.rec_path}:{key}: corrupt record ({exc})") from None
        return decode_image(data, f"{self.reader.rec_path}:{key}"), f"rec:{key}"

    def _label(self, index: int) -> int:
        return int(self._labels[index])

    def _landmark_key(self, index: int) -> int:
        return int(self.image_keys[index])


def pack_folder(
    src: str | os.PathLike[str],
    out_rec: str | os.PathLike[str],
    progress: bool = True,
) -> dict[str, Any]:
    """Pack an identity-folder tree into an insightface ``.rec/.idx`` (header layout).

    Image records keep the original encoded bytes and carry the identity index as label
    (sorted sub-folder order); a ``<out>.lst.csv`` sidecar lists ``key,path,label``. Unreadable
    images are skipped and listed in the returned summary.

    Returns:
        ``{"images": n, "identities": c, "skipped": [paths], "rec": ..., "idx": ..., "list": ...}``
    """
    from tqdm import tqdm

    from lafslib.io import BadImageError, list_images, read_image

    src = Path(src)
    if not src.is_dir():
        raise InputNotFoundError(f"source folder not found: {src}")
    files = [f for f in list_images(src) if "/" in f]
    if not files:
        raise DataError(f"{src}: no images in identity sub-folders")
    good: list[str] = []
    skipped: list[str] = []
    for rel in tqdm(files, desc="check", unit="img", disable=not progress):
        try:
            read_image(src / rel)
            good.append(rel)
        except BadImageError:
            skipped.append(rel)
    if not good:
        raise DataError(f"{src}: none of the {len(files)} images is readable")
    classes = sorted({f.split("/", 1)[0] for f in good})
    class_index = {c: i for i, c in enumerate(classes)}
    first_id = len(good) + 1
    end_id = first_id + len(classes)
    out_rec = Path(out_rec)
    list_path = out_rec.with_name(out_rec.stem + ".lst.csv")
    per_class: dict[int, list[int]] = {i: [] for i in range(len(classes))}
    entries: list[tuple[int, str, int]] = []
    with RecordWriter(out_rec) as writer:
        writer.write(0, pack_record(IRHeader(2, np.array([first_id, end_id], np.float32))))
        for key, rel in enumerate(tqdm(good, desc="pack", unit="img", disable=not progress), 1):
            label = class_index[rel.split("/", 1)[0]]
            data = (src / rel).read_bytes()
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), data))
            per_class[label].append(key)
            entries.append((key, rel, label))
        for c in range(len(classes)):
            keys = per_class[c]
            rng = np.array([keys[0], keys[-1] + 1], dtype=np.float32)
            writer.write(first_id + c, pack_record(IRHeader(2, rng, first_id + c, 0)))
    with list_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "path", "label"])
        w.writerows(entries)
    return {
        "images": len(entries),
        "identities": len(classes),
        "skipped": skipped,
        "rec": str(out_rec),
        "idx": str(out_rec.with_suffix(".idx")),
        "list": str(list_path),
    }
