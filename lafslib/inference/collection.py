"""Embed a whole folder of photos (raw or aligned) or a ``.rec``: resumable, multi-process.

Photos are read, and their faces detected and aligned, in ``workers`` processes; the main
process embeds the crops in batches. Every ``shard`` photos the results are written to
``NAME.npy.partial/NNNNNN.npz`` under a temporary name and renamed when complete, so a rerun
(after a crash or Ctrl-C) skips finished shards and redoes only a half-written one. When every
photo is done, the shards are assembled into the embeddings file (:mod:`lafslib.inference.store`)
in the order of the photos, and the partial folder is removed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.errors import DataError, InputNotFoundError, PathConflictError
from lafslib.inference.embedder import FaceEmbedder, PreparedFaces, prepare_faces
from lafslib.inference.store import Embeddings, index_paths, write_index

__all__ = [
    "EmbedReport",
    "embed_collection",
    "embed_in_memory",
    "iter_collection",
    "list_collection",
    "looks_aligned",
]

_ROW_KEYS = ("paths", "faces", "scores", "boxes", "landmarks")

_WORKER: dict[str, Any] = {}


@dataclass
class EmbedReport:
    """What ``embed_collection`` did.

    Attributes:
        photos: photos in the source.
        faces: rows written.
        skipped_done: photos done by an earlier run.
        no_face: photos where no face was found.
        unreadable: photo -> reason it could not be read.
        aligned: whether the input was taken as aligned crops.
        seconds: wall time.
    """

    photos: int = 0
    faces: int = 0
    skipped_done: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    aligned: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "photos": self.photos,
            "faces": self.faces,
            "skipped_done": self.skipped_done,
            "aligned": self.aligned,
            "no_face": sorted(self.no_face),
            "unreadable": dict(sorted(self.unreadable.items())),
            "seconds": round(self.seconds, 3),
        }


def list_collection(src: str | os.PathLike[str]) -> list[str]:
    """The photos of a folder (relative paths) or of a ``.rec`` (``rec:KEY``), in order."""
    from lafslib.io import list_images

    path = Path(src)
    if path.suffix == ".rec":
        if not path.is_file():
            raise InputNotFoundError(f"record file not found: {path}")
        from lafslib.data.recordio import RecordIODataset

        return [f"rec:{k}" for k in RecordIODataset(path).image_keys]
    if not path.is_dir():
        raise InputNotFoundError(f"photo folder not found: {path} (give a folder or a .rec)")
    photos = list_images(path)
    if not photos:
        raise DataError(f"{path}: no images found (.jpg, .png, ...)")
    return photos


def _read(src: str, name: str) -> np.ndarray:
    from lafslib.io import decode_image, read_image

    if not name.startswith("rec:"):
        return read_image(Path(src) / name)
    from lafslib.data.recordio import RecordReader, unpack_record

    reader = _WORKER.get("reader")
    if reader is None:
        reader = _WORKER["reader"] = RecordReader(src)
    try:
        _, data = unpack_record(reader.read(int(name[4:])))
    except ValueError as exc:
        raise DataError(f"{src}:{name[4:]}: corrupt record ({exc})") from None
    return decode_image(data, f"{src}:{name[4:]}")


def looks_aligned(
    src: str | os.PathLike[str], photos: list[str], size: int, probe: int = 8
) -> bool:
    """True when the source holds aligned crops: a ``.rec``, or a folder whose first readable
    photos (up to ``probe``) are all ``size x size``."""
    if Path(src).suffix == ".rec":
        return True
    seen = 0
    for name in photos:
        try:
            image = _read(str(src), name)
        except DataError:
            continue
        if image.shape[:2] != (size, size):
            return False
        seen += 1
        if seen == probe:
            break
    return seen > 0


def _init_worker(detector: Any, detector_kwargs: dict[str, Any]) -> None:
    if isinstance(detector, str):
        from lafslib.landmarks.detectors import create_detector

        detector = create_detector(detector, **detector_kwargs)
    _WORKER.clear()
    _WORKER["detector"] = detector


def _prepare(task: tuple[str, str, int, int, bool]) -> tuple[str, PreparedFaces | None, str]:
    """Read one photo and align its faces: ``(name, faces or None, reason)``."""
    src, name, size, max_faces, aligned = task
    try:
        image = _read(src, name)
        detector = None if aligned else _WORKER["detector"]
        return name, prepare_faces(image, detector, size, max_faces, name), ""
    except DataError as exc:
        return name, None, str(exc)


def _prepared(
    tasks: list[tuple[str, str, int, int, bool]], workers: int, embedder: FaceEmbedder
) -> Iterator[tuple[str, PreparedFaces | None, str]]:
    aligned = bool(tasks and tasks[0][4])
    if workers <= 1:
        _WORKER.clear()
        if not aligned:
            _WORKER["detector"] = embedder.detector
        yield from map(_prepare, tasks)
        return
    ctx = mp.get_context("spawn")
    init = (None if aligned else embedder.detector_spec, embedder.detector_kwargs)
    with ctx.Pool(workers, _init_worker, init) as pool:
        yield from pool.imap(_prepare, tasks, chunksize=4)


def iter_collection(
    src: str | os.PathLike[str],
    embedder: FaceEmbedder,
    photos: list[str],
    aligned: bool,
    workers: int = 0,
    shard: int = 512,
    progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """Embed ``photos`` of ``src``, yielding one shard at a time as arrays: ``paths, faces,
    scores, boxes, landmarks, vectors`` (rows) and ``done, status, reasons`` (photos;
    status ``ok``, ``no_face`` or ``unreadable``); ``progress`` shows a bar of photos."""
    from tqdm import tqdm

    tasks = [(str(src), p, embedder.input_size, embedder.max_faces, aligned) for p in photos]
    buffer: list[tuple[str, PreparedFaces | None, str]] = []
    with tqdm(total=len(tasks), desc="embed", unit="photo", disable=not progress) as bar:
        for item in _prepared(tasks, workers, embedder):
            buffer.append(item)
            bar.update(1)
            if len(buffer) == shard:
                yield _embed_shard(buffer, embedder)
                buffer = []
        if buffer:
            yield _embed_shard(buffer, embedder)


def embed_in_memory(
    src: str | os.PathLike[str],
    embedder: FaceEmbedder,
    aligned: bool | None = None,
    workers: int = 0,
    progress: bool = False,
) -> Embeddings:
    """Embed a folder or ``.rec`` without writing anything: an :class:`Embeddings` in memory
    (``meta`` as ``lafs embed`` records it)."""
    photos = list_collection(src)
    if aligned is None:
        aligned = looks_aligned(src, photos, embedder.input_size)
    shards = list(iter_collection(src, embedder, photos, aligned, workers, progress=progress))
    rows = [s for s in shards if len(s["paths"])]
    if not rows:
        raise DataError(f"{src}: no face found in any of its {len(photos)} photos")
    report = EmbedReport(photos=len(photos), aligned=aligned)
    for s in shards:
        for name, status, reason in zip(s["done"], s["status"], s["reasons"]):
            if status == "no_face":
                report.no_face.append(str(name))
            elif status == "unreadable":
                report.unreadable[str(name)] = str(reason)
    cat = {k: np.concatenate([s[k] for s in rows]) for k in _ROW_KEYS + ("vectors",)}
    report.faces = len(cat["paths"])
    return Embeddings(
        vectors=cat["vectors"],
        paths=[str(p) for p in cat["paths"]],
        faces=cat["faces"],
        scores=cat["scores"],
        boxes=cat["boxes"],
        landmarks=cat["landmarks"],
        meta={**_options(Path(src), embedder, aligned, "float32"), **report.to_dict()},
    )


def _embed_shard(
    items: list[tuple[str, PreparedFaces | None, str]], embedder: FaceEmbedder
) -> dict[str, Any]:
    found = [(n, f) for n, f, _ in items if f is not None and len(f.scores)]
    status = [
        "unreadable" if f is None else ("ok" if len(f.scores) else "no_face") for _, f, _ in items
    ]
    out: dict[str, Any] = {
        "done": np.array([n for n, _, _ in items]),
        "status": np.array(status),
        "reasons": np.array([r for _, _, r in items]),
    }
    faces = PreparedFaces.concat([f for _, f in found]) if found else None
    if faces is None:
        out["vectors"] = np.zeros((0, 0), np.float32)
        out["paths"] = np.array([], dtype=str)
        out["faces"] = np.zeros(0, np.int64)
        out["scores"], out["boxes"], out["landmarks"] = (
            np.zeros(0),
            np.zeros((0, 4)),
            np.zeros((0, 5, 2)),
        )
        return out
    out["vectors"] = embedder.embed_aligned(faces.crops, faces.keypoints).astype(np.float32)
    out["paths"] = np.array([n for n, f in found for _ in range(len(f.scores))])
    out["faces"] = np.concatenate([np.arange(len(f.scores)) for _, f in found])
    out["scores"], out["boxes"], out["landmarks"] = faces.scores, faces.boxes, faces.landmarks
    return out


def _options(src: Path, embedder: FaceEmbedder, aligned: bool, dtype: str) -> dict[str, Any]:
    return {
        "source": str(src),
        "model": embedder.source,
        "model_id": embedder.identity,
        "backend": embedder.backend,
        "flip": embedder.flip,
        "aligned": aligned,
        "detector": None if aligned else embedder.detector_name,
        "detector_kwargs": {} if aligned else embedder.detector_kwargs,
        "max_faces": embedder.max_faces,
        "input_size": embedder.input_size,
        "dtype": dtype,
    }


def _save_shard(folder: Path, number: int, shard: dict[str, Any]) -> None:
    tmp = folder / f".{number:06d}.npz.tmp"
    with tmp.open("wb") as f:
        np.savez(f, **shard)
    os.replace(tmp, folder / f"{number:06d}.npz")


def _load_shards(folder: Path) -> list[dict[str, np.ndarray]]:
    shards = []
    for path in sorted(folder.glob("[0-9]*.npz")):
        try:
            with np.load(path, allow_pickle=False) as data:
                shards.append({k: data[k] for k in data.files})
        except (ValueError, OSError, EOFError):
            path.unlink()  # a damaged shard is redone
    return shards


def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    if out.suffix != ".npy":
        raise ValueError(f"embeddings file must end in .npy, got {out}")
    resolved, source = out.resolve(), src.resolve()
    if source.is_dir() and source in resolved.parents:
        raise PathConflictError(f"{out} lies inside the source folder {src}; write it elsewhere")
    if out.exists() and not overwrite:
        raise PathConflictError(f"{out} already exists; choose another name, or --overwrite")


def embed_collection(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    embedder: FaceEmbedder,
    aligned: bool | None = None,
    workers: int = 0,
    dtype: str = "float32",
    shard: int = 512,
    overwrite: bool = False,
    progress: bool = False,
) -> EmbedReport:
    """Embed every photo of a folder or ``.rec`` into ``out`` (``NAME.npy`` + index).

    Args:
        src: a folder of photos (any tree) or an insightface ``.rec``.
        out: the ``.npy`` to write (``.csv`` and ``.json`` beside it).
        embedder: the :class:`FaceEmbedder` (model, detector, flip, batch size).
        aligned: the photos are aligned crops (None: a ``.rec``, or a folder whose photos are
            all of the model's input size).
        workers: processes that read, detect and align (0 or 1: in this process).
        dtype: ``float32`` or ``float16`` rows.
        shard: photos per resumable shard.
        overwrite: replace an existing ``out``.
        progress: show a bar of photos.

    Raises:
        InputNotFoundError, DataError: no source, or nothing in it.
        PathConflictError: ``out`` exists or lies inside ``src``.
        ValueError: a partial run of other options lies beside ``out``.
    """
    start = time.perf_counter()
    src, out = Path(src), Path(out)
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    _check_out(src, out, overwrite)
    photos = list_collection(src)
    if aligned is None:
        aligned = looks_aligned(src, photos, embedder.input_size)
    options = _options(src, embedder, aligned, dtype)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    meta_path = partial / "options.json"
    if meta_path.is_file():
        started = json.loads(meta_path.read_text())
        if started != json.loads(json.dumps(options)):
            changed = sorted(k for k in options if started.get(k) != options[k])
            raise ValueError(
                f"{partial} holds a partial run with other options ({', '.join(changed)}); "
                "rerun with the same ones, or delete that folder to start over"
            )
    else:
        meta_path.write_text(json.dumps(options, indent=2) + "\n")
    shards = _load_shards(partial)
    done = {str(n) for s in shards for n in s["done"]}
    todo = [p for p in photos if p not in done]
    report = EmbedReport(photos=len(photos), skipped_done=len(photos) - len(todo), aligned=aligned)
    number = max((int(p.stem) for p in partial.glob("[0-9]*.npz")), default=-1) + 1
    for part in iter_collection(src, embedder, todo, aligned, workers, shard, progress):
        _save_shard(partial, number, part)
        shards.append(part)
        number += 1
    _assemble(out, photos, shards, options, report, dtype)
    report.seconds = time.perf_counter() - start
    meta = {**options, **report.to_dict(), "dim": int(np.load(out, mmap_mode="r").shape[1])}
    _, meta_file = index_paths(out)
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(partial)
    return report


def _assemble(
    out: Path,
    photos: list[str],
    shards: list[dict[str, np.ndarray]],
    options: dict[str, Any],
    report: EmbedReport,
    dtype: str,
) -> None:
    """Write the shards' rows in photo order into ``out`` and its index."""
    order = {p: i for i, p in enumerate(photos)}
    for s in shards:
        for name, status, reason in zip(s["done"], s["status"], s["reasons"]):
            if str(name) not in order:
                continue
            if status == "no_face":
                report.no_face.append(str(name))
            elif status == "unreadable":
                report.unreadable[str(name)] = str(reason)
    keys = [
        (order.get(str(p), -1), int(f), si, j)
        for si, s in enumerate(shards)
        for j, (p, f) in enumerate(zip(s["paths"], s["faces"]))
    ]
    keys = sorted(k for k in keys if k[0] >= 0)
    report.faces = len(keys)
    if not keys:
        raise DataError(
            f"{options['source']}: no face found in any of its {len(photos)} photos "
            f"({len(report.unreadable)} unreadable)"
        )
    dim = next(s["vectors"].shape[1] for s in shards if len(s["paths"]))
    tmp = out.with_name(f".{out.name}.tmp")
    vectors = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(keys), dim))
    rows: dict[str, list[Any]] = {k: [] for k in _ROW_KEYS}
    for row, (_, _, si, j) in enumerate(keys):
        vectors[row] = shards[si]["vectors"][j]
        for k in rows:
            rows[k].append(shards[si][k][j])
    vectors.flush()
    del vectors
    os.replace(tmp, out)
    index, _ = index_paths(out)
    write_index(index, {k: np.asarray(v) for k, v in rows.items()})
