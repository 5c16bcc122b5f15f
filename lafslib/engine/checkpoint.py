"""Full-state checkpoints: one file, world-size independent, written atomically.

A checkpoint is written to a temporary file in the same folder, fsynced, then renamed over the
target, so a crash mid-write leaves the previous checkpoint intact. Loading uses
``torch.load(weights_only=True)``: a checkpoint never executes code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "prune_checkpoints"]

_NAME = re.compile(r"^step_(\d+)\.pt$")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable lafslib checkpoint ({exc})") from None


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for p in folder.glob("step_*.pt"):
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``folder`` (None if there is none)."""
    folder = Path(folder)
    found = _checkpoints(folder) if folder.is_dir() else []
    return found[-1][1] if found else None


def prune_checkpoints(folder: str | os.PathLike[str], keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest ``step_*.pt`` files."""
    found = _checkpoints(Path(folder))
    for _, path in found[: max(len(found) - keep_last, 0)]:
        path.unlink(missing_ok=True)
