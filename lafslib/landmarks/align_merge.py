"""Merging an aligned folder: the dataset's sidecars and report from every journal.

The outputs are a function of the journals alone (sources in recorded order, photos sorted,
faces in order), so ``N`` shards merged give the files of one run, byte for byte. Duplicates are
found here, across every shard and source (:mod:`.duplicates`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.errors import InputNotFoundError, LafsUserError
from lafslib.landmarks.align_state import (
    STATE_DIR,
    Part,
    Shard,
    atomic_write_text,
    load_manifest,
    read_parts,
)
from lafslib.landmarks.duplicates import NEAR_DISTANCE, exact_groups, link_groups, near_groups
from lafslib.landmarks.store import save_landmarks

__all__ = ["DROP_CHOICES", "REPORT", "SIDECARS", "merge_alignment"]

REPORT = "align_report.json"
SIDECARS = ("landmarks5.csv", "landmarks68.csv")
DROP_CHOICES = ("exact", "near")


def _complete_entries(dst: Path, manifest: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Per source, its entries in photo order; every source needs one complete set of shards."""
    parts = Part.all(dst)
    for index, record in enumerate(manifest["sources"]):
        mine = [p for p in parts if p.source == index]
        counts = sorted({p.shard.count for p in mine})
        complete = [
            n
            for n in counts
            if all(Part(dst, index, Shard(k, n)).summary.is_file() for k in range(n))
        ]
        if not complete:
            missing = [
                str(Shard(k, n))
                for n in counts
                for k in range(n)
                if not Part(dst, index, Shard(k, n)).summary.is_file()
            ]
            raise LafsUserError(
                f"{record['path']} is not fully aligned into {dst}: shard(s) "
                f"{', '.join(missing) or '0/1'} have not finished; run them "
                f"(lafs align {record['path']} {dst} --shard K/N), then merge again"
            )
    finished, _ = read_parts(dst)
    return [
        [entries[p] for p in sorted(entries)]
        for entries in (finished.get(i, {}) for i in range(len(manifest["sources"])))
    ]


def merge_alignment(
    dst: str | os.PathLike[str],
    drop_duplicates: str | None = None,
    near_distance: int = NEAR_DISTANCE,
) -> dict[str, Any]:
    """Build ``landmarks5.csv`` (``landmarks68.csv``) and ``align_report.json`` of ``dst`` from
    the journals of every source and shard; find duplicates and, on request, leave them out.

    Left-out crops move to ``dst/.lafs_align/left_out/`` (and back on a merge without the
    request), so that a dataset reader never sees them and nothing is deleted. The outputs
    depend only on the journals, so ``N`` merged shards give the files of one run, byte for byte.

    Args:
        dst: an aligned folder.
        drop_duplicates: ``None`` (list only), ``"exact"`` or ``"near"``.
        near_distance: Hamming distance (of 256 bits) of near-duplicate crops.

    Returns:
        The report written to ``dst/align_report.json``.
    """
    dst = Path(dst).resolve()
    if drop_duplicates not in (None, *DROP_CHOICES):
        raise ValueError(f"drop_duplicates must be 'exact' or 'near', got {drop_duplicates!r}")
    manifest = load_manifest(dst)
    if manifest is None:
        raise InputNotFoundError(f"{dst} holds no alignment to merge ({STATE_DIR}/ is missing)")
    per_source = _complete_entries(dst, manifest)
    sources = [record["path"] for record in manifest["sources"]]

    def label(index: int, rel: str) -> str:
        return rel if len(sources) == 1 else f"{sources[index]}/{rel}"

    report: dict[str, Any] = {
        "sources": [
            {"path": record["path"], **record["settings"]} for record in manifest["sources"]
        ],
        "photos": 0,
        "faces": 0,
        "detection_rate": 0.0,
        "no_face": [],
        "too_small": [],
        "unreadable": {},
        "conflicts": {},
    }
    crops: list[tuple[str, dict[str, Any]]] = []
    photos: list[tuple[str, str, list[str]]] = []  # (pixel digest, photo hash, crop names)
    for index, entries in enumerate(per_source):
        for entry in entries:
            report["photos"] += 1
            status, name = entry["status"], label(index, entry["path"])
            if status == "ok":
                outs = [face["out"] for face in entry["faces"]]
                photos.append((entry["digest"], entry["phash"], outs))
                crops += [(face["out"], face) for face in entry["faces"]]
            elif status in ("no_face", "too_small"):
                report[status].append(name)
            else:
                report["unreadable" if status == "unreadable" else "conflicts"][name] = entry[
                    "reason"
                ]
    exact = exact_groups([outs[0] for _, _, outs in photos], [d for d, _, _ in photos])
    faces_of = {outs[0]: outs for _, _, outs in photos}
    left_out: set[str] = set()
    if drop_duplicates is not None:
        for group in exact:
            left_out.update(name for first in group[1:] for name in faces_of[first])
    near = _near(crops, photos, left_out, near_distance)
    if drop_duplicates == "near":
        left_out.update(name for group in near for name in group[1:])
    _move_left_out(dst, {n for n, _ in crops}, left_out)
    kept = [(n, f) for n, f in crops if n not in left_out]
    readable = report["photos"] - len(report["unreadable"])
    found = readable - len(report["no_face"]) - len(report["too_small"])
    report["faces"] = len(kept)
    report["detection_rate"] = found / readable if readable else 0.0
    report["duplicates"] = {
        "exact": exact,
        "near": near,
        "near_distance": near_distance,
        "left_out": sorted(left_out),
    }
    _write_sidecars(dst, kept)
    atomic_write_text(dst / REPORT, json.dumps(report, indent=2) + "\n")
    return report


def _near(
    crops: list[tuple[str, dict[str, Any]]],
    photos: list[tuple[str, str, list[str]]],
    left_out: set[str],
    distance: int,
) -> list[list[str]]:
    """Near-duplicate crops: close crop hashes, or the same face of photos with close hashes."""
    kept = [(n, f["hash"]) for n, f in crops if n not in left_out]
    by_crop = near_groups([n for n, _ in kept], [h for _, h in kept], distance)
    firsts = [(outs[0], h) for _, h, outs in photos if outs[0] not in left_out]
    faces_of = {outs[0]: outs for _, _, outs in photos}
    by_photo = [
        list(faces)
        for group in near_groups([n for n, _ in firsts], [h for _, h in firsts], distance)
        for faces in zip(*(faces_of[first] for first in group))
    ]
    return link_groups(by_crop, by_photo)


def _move_left_out(dst: Path, crops: set[str], left_out: set[str]) -> None:
    """Move left-out crops under the state folder, and crops no longer left out back."""
    shelf = dst / STATE_DIR / "left_out"
    for name in sorted(crops):
        here, away = dst / name, shelf / name
        if name in left_out and here.is_file():
            away.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(here, away)
        elif name not in left_out and away.is_file() and not here.exists():
            shutil.move(away, here)


def _write_sidecars(dst: Path, kept: list[tuple[str, dict[str, Any]]]) -> None:
    """landmarks5.csv (and landmarks68.csv) of the kept crops, each written atomically."""
    for name, column in (("landmarks5.csv", "five"), ("landmarks68.csv", "pts68")):
        rows = [(n, f[column]) for n, f in kept if f.get(column) is not None]
        path = dst / name
        if rows:
            save_landmarks(path, [n for n, _ in rows], np.asarray([p for _, p in rows]))
        elif path.is_file() and column == "pts68":
            path.unlink()  # a sidecar of crops no longer kept (all left out)
