"""What an aligned folder remembers: its sources and settings, and one journal per shard.

``DST/.lafs_align/manifest.json`` records every source aligned into ``DST`` (resolved path,
detector, options), so that a different source is refused (or added on request) and a shard run
with other settings is refused before any work. ``DST/.lafs_align/parts/<s>-<K>-of-<N>/`` holds
shard ``K`` of ``N`` of source ``s``: ``journal.jsonl`` (one line per finished photo, and an
intent line before any crop is written, so that a crop left by a crash is known as ours) and
``part.json`` once the shard has finished. Shards are a deterministic partition of the sorted
listing by a hash of each relative path, so any machine computes the same split.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lafslib.errors import LafsUserError, PathConflictError

__all__ = [
    "STATE_DIR",
    "Part",
    "Shard",
    "atomic_write_text",
    "load_manifest",
    "parse_shard",
    "photo_in_shard",
    "read_journal",
    "register_source",
    "shard_from_env",
    "read_parts",
]

STATE_DIR = ".lafs_align"
MANIFEST = "manifest.json"


class AlignStateError(LafsUserError, ValueError):
    """The destination's record does not allow this run (another source, other settings)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` (0 <= K < N) as a :class:`Shard`.

    Raises:
        ValueError: naming the text and the expected form.
    """
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 0/8 (K from 0 to N-1)") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--shard {text!r}: K must be in 0..N-1 and N >= 1")
    return Shard(k, n)


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard a job array gives: SLURM (``SLURM_ARRAY_TASK_ID`` less
    ``SLURM_ARRAY_TASK_MIN``, of ``SLURM_ARRAY_TASK_COUNT``) or ``RANK``/``WORLD_SIZE``
    (torchrun, Kubernetes indexed jobs); None outside one."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return parse_shard(
            f"{int(env['SLURM_ARRAY_TASK_ID']) - first}/{int(env['SLURM_ARRAY_TASK_COUNT'])}"
        )
    if "RANK" in env and "WORLD_SIZE" in env:
        return parse_shard(f"{int(env['RANK'])}/{int(env['WORLD_SIZE'])}")
    return None


def photo_in_shard(rel: str, shard: Shard) -> bool:
    """Whether photo ``rel`` belongs to ``shard`` (CRC-32 of the path modulo the count)."""
    return zlib.crc32(rel.encode("utf-8")) % shard.count == shard.index


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def state_dir(dst: Path) -> Path:
    """``DST/.lafs_align``."""
    return dst / STATE_DIR


def load_manifest(dst: Path) -> dict[str, Any] | None:
    """The destination's manifest, or None when nothing was aligned into it."""
    path = state_dir(dst) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AlignStateError(f"{path}: unreadable alignment record ({exc})") from None


def register_source(dst: Path, src: Path, settings: dict[str, Any], size: int, add: bool) -> int:
    """Index of ``src`` among the sources of ``dst``, adding it when new.

    Args:
        dst: destination folder.
        src: resolved source folder.
        settings: detector name and options, face policy, minimum face: must equal the
            recorded ones for a source already there.
        size: crop side; one per destination.
        add: allow a source other than the recorded ones.

    Raises:
        AlignStateError: another source without ``add``, other settings or another size.
    """
    manifest = load_manifest(dst)
    if manifest is None:
        for name in ("landmarks5.csv", "landmarks68.csv", "align_report.json"):
            if (dst / name).exists():
                raise AlignStateError(
                    f"{dst} holds {name} but no record of the alignment that wrote it "
                    f"({STATE_DIR}/{MANIFEST}); align into an empty or new folder"
                )
        manifest = {"format": 1, "size": size, "sources": []}
    if manifest["size"] != size:
        raise AlignStateError(
            f"{dst} holds {manifest['size']}x{manifest['size']} crops; this run asks for "
            f"{size}x{size}: align into another folder"
        )
    paths = [s["path"] for s in manifest["sources"]]
    if str(src) in paths:
        index = paths.index(str(src))
        recorded = manifest["sources"][index]["settings"]
        if recorded != settings:
            changed = ", ".join(
                f"{k}: {recorded.get(k)!r} -> {settings.get(k)!r}"
                for k in sorted(set(recorded) | set(settings))
                if recorded.get(k) != settings.get(k)
            )
            raise AlignStateError(
                f"{src} was aligned into {dst} with other settings ({changed}); rerun with "
                "the recorded ones, or align into another folder"
            )
        return index
    if paths and not add:
        raise AlignStateError(
            f"{dst} holds the alignment of {paths[0]}"
            + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
            + f", not of {src}: give --add to add {src} to it, or another output folder"
        )
    manifest["sources"].append({"path": str(src), "settings": settings})
    state_dir(dst).mkdir(parents=True, exist_ok=True)
    atomic_write_text(state_dir(dst) / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return len(paths)


@dataclass(frozen=True)
class Part:
    """Shard ``shard`` of source ``source``: its folder under ``DST/.lafs_align/parts``."""

    dst: Path
    source: int
    shard: Shard

    @property
    def folder(self) -> Path:
        return (
            state_dir(self.dst)
            / "parts"
            / f"{self.source}-{self.shard.index}-of-{self.shard.count}"
        )

    @property
    def journal(self) -> Path:
        return self.folder / "journal.jsonl"

    @property
    def summary(self) -> Path:
        return self.folder / "part.json"

    @classmethod
    def all(cls, dst: Path) -> list[Part]:
        """Every part folder of ``dst``, in source then shard order."""
        out = []
        for folder in sorted((state_dir(dst) / "parts").glob("*-*-of-*")):
            s, k, _, n = folder.name.split("-")
            out.append(cls(dst, int(s), Shard(int(k), int(n))))
        return sorted(out, key=lambda p: (p.source, p.shard.count, p.shard.index))


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of a journal; a line cut by a crash is skipped (that photo is redone)."""
    if not path.is_file():
        return
    with path.open() as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def check_not_inside(path: Path, src: Path) -> Path:
    """``path`` resolved; refused when it lands inside ``src`` (through a link, say)."""
    resolved = path.resolve()
    if resolved == src or src in resolved.parents:
        raise PathConflictError(
            f"refusing to write {path}: it resolves to {resolved}, inside the source folder {src}"
        )
    return resolved


def read_parts(dst: Path) -> tuple[dict[int, dict[str, dict[str, Any]]], dict[int, set[str]]]:
    """Every journal of ``dst``, read once.

    Returns:
        Per source, its finished entries ``{photo: entry}`` over all its parts; and per source,
        the names alignment wrote (or began to write) into ``dst``.
    """
    entries: dict[int, dict[str, dict[str, Any]]] = {}
    written: dict[int, set[str]] = {}
    for part in Part.all(dst):
        done = entries.setdefault(part.source, {})
        names = written.setdefault(part.source, set())
        for entry in read_journal(part.journal):
            names.update(entry.get("outs", ()))
            names.update(face["out"] for face in entry.get("faces", ()))
            if entry.get("status") != "writing":
                done[entry["path"]] = entry
    return entries, written
