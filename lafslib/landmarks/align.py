"""``lafs align``: raw photos -> aligned crops + landmark sidecars, resumable, multi-process.

Every photo under ``src`` (any tree) is read, faces are detected, and each kept face is warped
to the ArcFace template at ``size x size`` and written under ``dst`` at the same relative path.
``dst/landmarks5.csv`` holds the 5 points in aligned-crop pixels (``landmarks68.csv`` too when
the detector gives 68). Photos with no face or that cannot be read are listed in
``dst/align_report.json``; inputs are never modified: ``dst`` may neither be nor contain nor lie
inside ``src``, and every output path is resolved (symbolic links too) and refused when it lands
inside ``src``.

Progress is journalled in ``dst/.align_journal.jsonl`` after each finished photo, so a rerun
(or a run after a crash) skips what is done and still writes complete sidecars.
"""

from __future__ import annotations

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
from lafslib.landmarks.detectors import Face, FaceDetector, create_detector
from lafslib.landmarks.store import save_landmarks
from lafslib.landmarks.template import align_face, transform_points

__all__ = ["AlignReport", "align_folder", "align_photo", "output_name"]

JOURNAL = ".align_journal.jsonl"
REPORT = "align_report.json"


@dataclass
class AlignReport:
    """What an alignment run did; ``no_face`` and ``unreadable`` list relative paths."""

    photos: int = 0
    faces: int = 0
    skipped_done: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

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
            "unreadable": dict(sorted(self.unreadable.items())),
            "seconds": round(self.seconds, 3),
        }


def output_name(rel: str, face_index: int) -> str:
    """Relative output path of face ``face_index`` of photo ``rel`` (JPEG/PNG kept, else PNG)."""
    path = Path(rel)
    suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    stem = path.stem if face_index == 0 else f"{path.stem}_face{face_index}"
    return (path.parent / f"{stem}{suffix}").as_posix()


def _select(faces: list[Face], policy: str) -> list[Face]:
    if policy == "largest":
        return [max(faces, key=lambda f: f.area)] if faces else []
    return sorted(faces, key=lambda f: -f.area)


def align_photo(
    image: np.ndarray, detector: FaceDetector, size: int = 112, policy: str = "largest"
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, float]]:
    """Detect and align the faces of one photo.

    Returns:
        Per kept face: the (size, size, 3) crop, its 5 points (5, 2) and 68 points (68, 2) or
        None in crop pixels, and the detector score.
    """
    out = []
    for face in _select(detector.detect(image), policy):
        crop, m = align_face(image, face.five_points(), size)
        five = transform_points(face.five_points(), m)
        pts68 = transform_points(face.landmarks, m) if face.layout == "ibug68" else None
        out.append((crop, five, pts68, face.score))
    return out


def _output(dst: str | Path, rel: str, src: str | Path) -> Path:
    """``dst/rel``, resolved; a path that lands inside ``src`` (through a symbolic link, say) is
    refused before anything is written."""
    path = (Path(dst) / rel).resolve()
    src = Path(src)
    if path == src or src in path.parents:
        raise PathConflictError(
            f"refusing to write {Path(dst) / rel}: it resolves to {path}, inside the source "
            f"folder {src}"
        )
    return path


def _write_image(path: Path, crop: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(crop).save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    os.replace(tmp, path)


_WORKER: dict[str, Any] = {}


def _init_worker(detector_name: str, detector_kwargs: dict[str, Any]) -> None:
    _WORKER["detector"] = create_detector(detector_name, **detector_kwargs)


def _process(task: tuple[str, str, str, int, str]) -> dict[str, Any]:
    src, dst, rel, size, policy = task
    try:
        image = read_image(Path(src) / rel)
    except BadImageError as exc:
        return {"path": rel, "status": "unreadable", "reason": str(exc)}
    faces = align_photo(image, _WORKER["detector"], size, policy)
    if not faces:
        return {"path": rel, "status": "no_face"}
    written = []
    for i, (crop, five, pts68, score) in enumerate(faces):
        name = output_name(rel, i)
        _write_image(_output(dst, name, src), crop)
        written.append(
            {
                "out": name,
                "score": score,
                "five": five.round(3).tolist(),
                "pts68": None if pts68 is None else pts68.round(3).tolist(),
            }
        )
    return {"path": rel, "status": "ok", "faces": written}


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open() as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that photo is redone
            done[entry["path"]] = entry
    return done


def _results(
    tasks: list[tuple[str, str, str, int, str]],
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


def align_folder(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    detector: str = "dlib",
    detector_kwargs: dict[str, Any] | None = None,
    size: int = 112,
    policy: str = "largest",
    workers: int = 1,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> AlignReport:
    """Align every photo under ``src`` into ``dst`` (see the module docstring).

    Args:
        src: folder of photos (any tree).
        dst: output folder (created; must not be ``src``, inside it, or contain it).
        detector: a name from :data:`lafslib.landmarks.detectors.DETECTORS`.
        detector_kwargs: options of that detector.
        size: side of the aligned crops.
        policy: ``"largest"`` face per photo or ``"all"`` faces.
        workers: processes (each builds its own detector).
        progress: wraps the result iterator, e.g. ``lambda it, n: tqdm(it, total=n)``.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_dir():
        raise InputNotFoundError(f"source folder not found: {src}")
    if dst == src or src in dst.parents or dst in src.parents:
        raise PathConflictError(
            f"output folder {dst} and source folder {src} overlap (one is inside the other); "
            "choose an output folder outside the source that does not contain it"
        )
    for name in (JOURNAL, REPORT, "landmarks5.csv", "landmarks68.csv"):
        _output(dst, name, src)
    if policy not in ("largest", "all"):
        raise ValueError(f"face policy must be 'largest' or 'all', got {policy!r}")
    detector_kwargs = dict(detector_kwargs or {})
    built = create_detector(detector, **detector_kwargs)  # fails before any work
    dst.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    journal_path = dst / JOURNAL
    done = _read_journal(journal_path)
    photos = list_images(src)
    report = AlignReport(photos=len(photos), skipped_done=sum(p in done for p in photos))
    tasks = [(str(src), str(dst), rel, size, policy) for rel in photos if rel not in done]
    results = _results(tasks, workers, detector, detector_kwargs, built)
    if progress is not None:
        results = progress(results, len(tasks))
    with journal_path.open("a") as journal:
        for entry in results:
            done[entry["path"]] = entry
            journal.write(json.dumps(entry) + "\n")
            journal.flush()
    _write_outputs(dst, [done[p] for p in photos], report)
    report.seconds = time.perf_counter() - start
    (dst / REPORT).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _write_outputs(dst: Path, entries: list[dict[str, Any]], report: AlignReport) -> None:
    keys, fives, keys68, pts68 = [], [], [], []
    for entry in entries:
        if entry["status"] == "no_face":
            report.no_face.append(entry["path"])
        elif entry["status"] == "unreadable":
            report.unreadable[entry["path"]] = entry["reason"]
        else:
            for face in entry["faces"]:
                keys.append(face["out"])
                fives.append(face["five"])
                if face["pts68"] is not None:
                    keys68.append(face["out"])
                    pts68.append(face["pts68"])
    report.faces = len(keys)
    if keys:
        save_landmarks(dst / "landmarks5.csv", keys, np.asarray(fives))
    if keys68:
        save_landmarks(dst / "landmarks68.csv", keys68, np.asarray(pts68))
