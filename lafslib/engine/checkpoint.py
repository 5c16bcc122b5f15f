"""Full-state checkpoints: one file, world-size independent, written atomically.

A checkpoint is written to a temporary file in the same folder, fsynced, then renamed over the
target, so a crash mid-write leaves the previous checkpoint intact; the temporary file of a
killed write is removed when the run starts again (:func:`remove_stale_temporaries`). Loading
uses ``torch.load(weights_only=True)``: a checkpoint never executes code.

A run's ``checkpoints/`` folder holds one history only: resuming checks that the checkpoint
belongs to the task and that the folder holds nothing after it (:func:`resume_checkpoint`),
and pruning never deletes a checkpoint newer than the one just written.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lafslib.engine.runlock import pid_alive
from lafslib.errors import CheckpointError, InputNotFoundError, LafsUserError, RunDirError

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "remove_stale_temporaries",
    "resume_checkpoint",
    "restoring",
]

_NAME = re.compile(r"^step_(\d+)\.pt$")
_TMP = re.compile(r"^\.step_\d+\.pt\.tmp-(\d+)$")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: no half-written file stays behind
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only).

    Raises:
        InputNotFoundError: no such file.
        CheckpointError: not a checkpoint (or one that asks to run code).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable lafslib checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a lafslib checkpoint (holds a {type(state).__name__})")
    return state


def list_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_*.pt`` in ``folder``, by step."""
    folder = Path(folder)
    found = []
    for p in folder.glob("step_*.pt") if folder.is_dir() else ():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``folder`` (None if there is none)."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def prune_checkpoints(
    folder: str | os.PathLike[str], keep_last: int, upto: int | None = None
) -> None:
    """Delete all but the ``keep_last`` newest ``step_*.pt`` files.

    Args:
        folder: the run's ``checkpoints/``.
        keep_last: how many to keep (at least 1).
        upto: the step just written; checkpoints after it are never candidates, so a
            checkpoint that is not part of this history can never push this run's out.
    """
    found = [(s, p) for s, p in list_checkpoints(folder) if upto is None or s <= upto]
    for _, path in found[: max(len(found) - max(keep_last, 1), 0)]:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of checkpoint writes whose process is gone (killed mid-write).

    Returns:
        The files removed.
    """
    removed = []
    folder = Path(folder)
    for p in folder.iterdir() if folder.is_dir() else ():
        m = _TMP.match(p.name)
        if m and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def resume_checkpoint(
    folder: str | os.PathLike[str], resume: str, task: str, keys: Sequence[str]
) -> tuple[Path, dict[str, Any]] | None:
    """Find, load and check the checkpoint a run resumes from.

    Args:
        folder: the run's ``checkpoints/``.
        resume: ``"auto"`` (the latest in ``folder``; None when there is none) or a file.
        task: ``"pretrain"`` or ``"finetune"``: the checkpoint must come from that task.
        keys: state entries the task needs.

    Raises:
        InputNotFoundError: an explicit checkpoint that does not exist.
        CheckpointError: not a checkpoint of ``task``.
        RunDirError: ``folder`` holds checkpoints after the resumed one, or of another run
            (resuming would mix two histories, and pruning would delete one of them).
    """
    folder = Path(folder)
    if resume == "auto":
        path = latest_checkpoint(folder)
        if path is None:
            return None
    else:
        path = Path(resume)
        if not path.is_file():
            raise InputNotFoundError(f"checkpoint not found: {resume}")
    state = load_checkpoint(path)
    config = state.get("config")
    found = config.get("task") if isinstance(config, dict) else None
    if found != task:
        what = f"a {found} checkpoint" if found in ("pretrain", "finetune") else "no run checkpoint"
        raise CheckpointError(f"{path}: {what}; 'lafs {task} --resume' needs a {task} checkpoint")
    missing = [k for k in (*keys, "step") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete {task} checkpoint (no '{missing[0]}')")
    step = int(state["step"])
    inside = path.resolve().parent == folder.resolve()
    others = [(s, p) for s, p in list_checkpoints(folder) if p.resolve() != path.resolve()]
    later = [s for s, _ in others if s > step]
    if later or (others and not inside):
        detail = f"after step {step} (up to step {max(later)})" if inside else "of another run"
        raise RunDirError(
            f"{folder} holds checkpoints {detail}: resuming from {path} would mix two runs; "
            f"resume the latest with --resume auto, or resume into another run directory "
            f"(--set run.output_dir=...)"
        )
    return path, state


def _detail(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return lines[0][:300] if lines else type(exc).__name__


@contextlib.contextmanager
def restoring(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a state that does not fit the model, optimizer or loss into a CheckpointError."""
    try:
        yield
    except LafsUserError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: does not fit this recipe ({_detail(exc)}); resume with the recipe of "
            "that run, or start another run directory"
        ) from exc
