"""``lafs align``: raw photos -> aligned crops + landmark sidecars; resumable, sharded, safe.

Every photo under ``src`` (any tree; symbolic links followed once per real file, loops cut) is
read upright (EXIF orientation), faces are detected, and each kept face is warped to the ArcFace
template at ``size x size`` and written under ``dst`` (names: :mod:`.align_names`).
``dst/landmarks5.csv`` holds the 5 points in aligned-crop pixels (``landmarks68.csv`` too when
the detector gives 68) and ``dst/align_report.json`` lists every photo that gave no crop (no
face, faces too small, unreadable, a name held by a file alignment did not write) and the
duplicates found (:mod:`.duplicates`).

Nothing is lost or corrupted: inputs are never modified (``dst`` may neither be, contain nor
lie inside ``src``; every output path is resolved and refused inside ``src``); a file in
``dst`` that alignment did not write is never replaced; ``dst`` records its sources
(:mod:`.align_state`), so a different source is refused unless added (``add=True``), and the
sidecars and report are rebuilt from the journals of every source and shard, atomically.

A run is shard ``K`` of ``N`` (default 0 of 1) of its source's sorted listing. Each shard
journals every finished photo, so a rerun resumes; a run of one shard merges at once, and
:func:`merge_alignment` merges ``N`` shards run on many machines into the same files, byte for
byte, as one run.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lafslib.errors import InputNotFoundError, PathConflictError
from lafslib.io import BadImageError, list_images, read_image
from lafslib.landmarks.align_merge import DROP_CHOICES, REPORT, SIDECARS, merge_alignment
from lafslib.landmarks.align_names import crop_suffix, extra_name, plan_names
from lafslib.landmarks.align_state import (
    STATE_DIR,
    Part,
    Shard,
    atomic_write_text,
    check_not_inside,
    photo_in_shard,
    read_parts,
    register_source,
)
from lafslib.landmarks.detectors import DEFAULT_DETECTOR, Face, FaceDetector, create_detector
from lafslib.landmarks.duplicates import NEAR_DISTANCE, perceptual_hash, pixel_digest
from lafslib.landmarks.template import align_face, transform_points

__all__ = ["AlignReport", "align_folder", "align_photo", "merge_alignment", "REPORT"]


@dataclass
class AlignReport:
    """What one run (one shard) did over its photos; lists hold relative paths.

    ``merged`` is the dataset's report (:func:`merge_alignment`) when the run merged.
    """

    photos: int = 0
    faces: int = 0
    skipped_done: int = 0
    no_face: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    merged: dict[str, Any] | None = None

    @property
    def detection_rate(self) -> float:
        """Fraction of readable photos that gave at least one face."""
        readable = self.photos - len(self.unreadable)
        return (readable - len(self.no_face)) / readable if readable else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "photos": self.photos,
            "faces": self.faces,
            "skipped_done": self.skipped_done,
            "detection_rate": self.detection_rate,
            "no_face": sorted(self.no_face),
            "too_small": sorted(self.too_small),
            "unreadable": dict(sorted(self.unreadable.items())),
            "conflicts": dict(sorted(self.conflicts.items())),
            "seconds": round(self.seconds, 3),
        }


def _select(faces: list[Face], policy: str) -> list[Face]:
    ordered = sorted(faces, key=lambda f: -f.area)
    return ordered[:1] if policy == "largest" else ordered


def _aligned(
    image: np.ndarray,
    detector: FaceDetector,
    size: int,
    policy: str,
    min_face: float,
    key: str | int | None,
) -> tuple[list[tuple[Face, np.ndarray, np.ndarray, np.ndarray | None]], int]:
    """Kept faces with crop, 5 and 68 points, and the number dropped as smaller than
    ``min_face`` pixels (the shorter side of the box)."""
    found = detector.detect(image, key=key)
    big = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_face]
    out = []
    for face in _select(big, policy):
        five_src = face.five_points()
        crop, m = align_face(image, five_src, size)
        five = transform_points(five_src, m)
        pts68 = transform_points(face.landmarks, m) if face.layout == "ibug68" else None
        out.append((face, crop, five, pts68))
    return out, len(found) - len(big)


def align_photo(
    image: np.ndarray,
    detector: FaceDetector,
    size: int = 112,
    policy: str = "largest",
    min_face: float = 0.0,
    key: str | int | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, float]]:
    """Detect and align the faces of one photo.

    Args:
        image: uint8 RGB ``(H, W, 3)``.
        detector: any :class:`~lafslib.landmarks.detectors.FaceDetector`.
        size: side of the crops.
        policy: ``"largest"`` face or ``"all"`` faces (largest first).
        min_face: faces whose box is smaller (shorter side, photo pixels) are dropped.
        key: the photo's name, for detectors that look landmarks up (``sidecar``).

    Returns:
        Per kept face: the (size, size, 3) crop, its 5 points (5, 2) and 68 points (68, 2) or
        None in crop pixels, and the detector score.
    """
    faces, _ = _aligned(image, detector, size, policy, min_face, key)
    return [(crop, five, pts68, face.score) for face, crop, five, pts68 in faces]


def _encode(crop: np.ndarray, suffix: str) -> bytes:
    buf = io.BytesIO()
    if suffix == ".png":
        Image.fromarray(crop).save(buf, format="PNG")
    else:
        Image.fromarray(crop).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


_WORKER: dict[str, Any] = {}


def _init_worker(detector_name: str, detector_kwargs: dict[str, Any]) -> None:
    import cv2

    cv2.setNumThreads(1)
    _WORKER["detector"] = create_detector(detector_name, **detector_kwargs)


def _process(task: tuple[str, str, int, str, float]) -> dict[str, Any]:
    """Read, detect, align and encode one photo (in a worker); nothing is written here."""
    src, rel, size, policy, min_face = task
    try:
        image = read_image(Path(src) / rel)
    except BadImageError as exc:
        return {"path": rel, "status": "unreadable", "reason": str(exc)}
    faces, small = _aligned(image, _WORKER["detector"], size, policy, min_face, rel)
    result: dict[str, Any] = {
        "path": rel,
        "digest": pixel_digest(image),
        "phash": perceptual_hash(image),
    }
    if not faces:
        result["status"] = "too_small" if small else "no_face"
        return result
    suffix = crop_suffix(rel)
    result["status"] = "ok"
    result["faces"] = [
        {
            "data": _encode(crop, suffix),
            "score": round(float(face.score), 4),
            "box": np.round(face.box, 1).tolist(),
            "five": five.round(3).tolist(),
            "pts68": None if pts68 is None else pts68.round(3).tolist(),
            "hash": perceptual_hash(crop),
        }
        for face, crop, five, pts68 in faces
    ]
    return result


def _results(
    tasks: list[tuple[str, str, int, str, float]],
    workers: int,
    detector: str,
    detector_kwargs: dict[str, Any],
    built: FaceDetector,
) -> Iterable[dict[str, Any]]:
    if workers <= 1:
        _WORKER["detector"] = built
        yield from map(_process, tasks)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, _init_worker, (detector, detector_kwargs)) as pool:
        yield from pool.imap_unordered(_process, tasks, chunksize=4)


def _settings(
    detector: str, detector_kwargs: dict[str, Any], policy: str, min_face: float
) -> dict[str, Any]:
    """What must stay equal across the shards and reruns of one source (JSON-comparable)."""
    options = {
        k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
        for k, v in sorted(detector_kwargs.items())
    }
    return {"detector": detector, "options": options, "faces": policy, "min_face": min_face}


def _write_crop(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def align_folder(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    detector: str = DEFAULT_DETECTOR,
    detector_kwargs: dict[str, Any] | None = None,
    size: int = 112,
    policy: str = "largest",
    workers: int = 1,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    min_face: float = 0.0,
    shard: Shard | None = None,
    add: bool = False,
    drop_duplicates: str | None = None,
    near_distance: int = NEAR_DISTANCE,
) -> AlignReport:
    """Align the photos of ``src`` (or of one shard of them) into ``dst``.

    Args:
        src: folder of photos (any tree).
        dst: output folder (created; must not be ``src``, inside it, or contain it).
        detector: a name from :data:`lafslib.landmarks.detectors.DETECTORS`.
        detector_kwargs: options of that detector.
        size: side of the aligned crops.
        policy: ``"largest"`` face per photo or ``"all"`` faces.
        workers: processes (each builds its own detector, OpenCV on one thread).
        progress: wraps the result iterator, e.g. ``lambda it, n: tqdm(it, total=n)``.
        min_face: faces smaller than this (shorter box side, photo pixels) are dropped; a photo
            whose faces are all smaller is listed as ``too_small``.
        shard: this run's share of the photos (:func:`~.align_state.parse_shard`); the default
            (one shard) merges at the end, several are merged by :func:`merge_alignment`.
        add: align ``src`` into a ``dst`` that holds another source's alignment, keeping it.
        drop_duplicates: when merging, leave out later copies: ``"exact"`` (same pixels) or
            ``"near"`` (exact, and crops within ``near_distance`` bits of perceptual hash).
        near_distance: Hamming distance of near-duplicate crops.

    Raises:
        PathConflictError: overlapping folders, an output resolving into ``src``.
        LafsUserError: another source without ``add``, other settings than the recorded ones.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    shard = shard or Shard()
    if not src.is_dir():
        raise InputNotFoundError(f"source folder not found: {src}")
    if dst == src or src in dst.parents or dst in src.parents:
        raise PathConflictError(
            f"output folder {dst} and source folder {src} overlap (one is inside the other); "
            "choose an output folder outside the source that does not contain it"
        )
    for name in (STATE_DIR, REPORT, *SIDECARS):
        check_not_inside(dst / name, src)
    if policy not in ("largest", "all"):
        raise ValueError(f"face policy must be 'largest' or 'all', got {policy!r}")
    if drop_duplicates not in (None, *DROP_CHOICES):
        raise ValueError(f"drop_duplicates must be 'exact' or 'near', got {drop_duplicates!r}")
    detector_kwargs = dict(detector_kwargs or {})
    built = create_detector(detector, **detector_kwargs)  # fails before any work
    dst.mkdir(parents=True, exist_ok=True)
    settings = _settings(detector, detector_kwargs, policy, float(min_face))
    source = register_source(dst, src, settings, size, add)
    start = time.perf_counter()
    part = Part(dst, source, shard)
    part.folder.mkdir(parents=True, exist_ok=True)
    listing = list_images(src)
    entries, written = read_parts(dst)
    taken = set().union(*(names for s, names in written.items() if s != source))
    names = plan_names(listing, taken)
    reserved = taken | set(names.values())
    ours = set().union(*written.values())
    photos = [rel for rel in listing if photo_in_shard(rel, shard)]
    done = entries.get(source, {})
    report = AlignReport(photos=len(photos), skipped_done=sum(p in done for p in photos))
    tasks = [(str(src), rel, size, policy, float(min_face)) for rel in photos if rel not in done]
    results = _results(tasks, workers, detector, detector_kwargs, built)
    if progress is not None:
        results = progress(results, len(tasks))
    with part.journal.open("a") as journal:
        for result in results:
            entry = _store(result, dst, src, names, reserved, ours, journal)
            done[entry["path"]] = entry
            journal.write(json.dumps(entry) + "\n")
            journal.flush()
    _count(report, [done[p] for p in photos])
    report.seconds = time.perf_counter() - start
    summary = {"source": str(src), "shard": str(shard), "settings": settings, **report.to_dict()}
    atomic_write_text(part.summary, json.dumps(summary, indent=2) + "\n")
    if shard.count == 1:
        report.merged = merge_alignment(dst, drop_duplicates, near_distance)
    return report


def _store(
    result: dict[str, Any],
    dst: Path,
    src: Path,
    names: dict[str, str],
    reserved: set[str],
    ours: set[str],
    journal: io.TextIOBase,
) -> dict[str, Any]:
    """Write the crops of one processed photo (or refuse them) and return its journal entry."""
    if result["status"] != "ok":
        return result
    first = names[result["path"]]
    outs = [first] + [extra_name(first, k, reserved) for k in range(1, len(result["faces"]))]
    paths = [check_not_inside(dst / name, src) for name in outs]
    for name, path in zip(outs, paths):
        if (path.exists() or path.is_symlink()) and name not in ours:
            return {
                "path": result["path"],
                "status": "conflict",
                "digest": result["digest"],
                "reason": f"{dst / name} exists and was not written by lafs align; left as it is",
            }
    journal.write(json.dumps({"path": result["path"], "status": "writing", "outs": outs}) + "\n")
    journal.flush()
    ours.update(outs)
    faces = []
    for name, path, face in zip(outs, paths, result["faces"]):
        _write_crop(path, face.pop("data"))
        faces.append({"out": name, **face})
    return {**{k: result[k] for k in ("path", "digest", "phash")}, "status": "ok", "faces": faces}


def _count(report: AlignReport, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        status, path = entry["status"], entry["path"]
        if status == "ok":
            report.faces += len(entry["faces"])
        elif status == "no_face":
            report.no_face.append(path)
        elif status == "too_small":
            report.too_small.append(path)
        elif status == "unreadable":
            report.unreadable[path] = entry["reason"]
        elif status == "conflict":
            report.conflicts[path] = entry["reason"]
