"""Full-state checkpoints: one file, world-size independent, written atomically.

A checkpoint is written to a temporary file in the same folder, fsynced, then renamed over the
target, so a crash mid-write leaves the previous checkpoint intact; the temporary file of a
killed write is removed when the run starts again (:func:`remove_stale_temporaries`). Loading
uses ``torch.load(weights_only=True)``: a checkpoint never executes code.

A run's ``checkpoints/`` folder holds one history only: resuming checks that the checkpoint
belongs to the task (:func:`resume_checkpoint`); ``--resume auto`` passes over checkpoints that
do not load (a node died while copying one) to the newest good one, and resuming an earlier
checkpoint of the run moves the later ones aside (kept, never deleted); pruning never deletes
a checkpoint newer than the one just written. A full disk while saving raises
:class:`~lafslib.errors.DiskFullError` naming the file, the earlier checkpoints intact.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lafslib.engine.runlock import pid_alive
from lafslib.errors import (
    CheckpointError,
    DiskFullError,
    InputNotFoundError,
    LafsUserError,
    RunDirError,
    disk_full,
    disk_full_message,
)

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
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: no half-written file stays behind
        full = disk_full(exc) if isinstance(exc, Exception) else None
        if full is not None:
            raise DiskFullError(disk_full_message(full, path)) from exc
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
        reason = _unreadable(path, exc)
        raise CheckpointError(f"{path}: not a loadable lafslib checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a lafslib checkpoint (holds a {type(state).__name__})")
    return state


def _unreadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in the file's terms (never the unpickler's)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as err:
        return f"cannot read it: {err.strerror or err}"
    if size == 0:
        return "empty file"
    if not any(head):
        return f"zero-filled, {size} bytes: not a checkpoint"
    if head[:4] != b"PK\x03\x04":
        return f"{size} bytes that are not a torch.save archive"
    if isinstance(exc, pickle.UnpicklingError):
        return "it asks to build objects a checkpoint never holds; refused, nothing was run"
    return f"truncated or damaged: the archive of {size} bytes is incomplete"


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
    folder: str | os.PathLike[str],
    resume: str,
    task: str,
    keys: Sequence[str],
    report: Callable[[str], None] = print,
    is_main: bool = True,
) -> tuple[Path, dict[str, Any]] | None:
    """Find, load and check the checkpoint a run resumes from.

    With ``"auto"``, a checkpoint that does not load (truncated, zero-filled, not a checkpoint)
    is passed over with one line through ``report`` for the newest one that does. An explicit
    checkpoint of this run (in ``folder``) that has later ones after it is accepted: the later
    ones are moved (on rank 0) to ``folder/after_step_<N>-<time>/``, kept but out of the
    history the resumed run writes.

    Args:
        folder: the run's ``checkpoints/``.
        resume: ``"auto"`` (the latest good one in ``folder``; None when there is none) or a
            file.
        task: ``"pretrain"`` or ``"finetune"``: the checkpoint must come from that task.
        keys: state entries the task needs.
        report: prints the lines about skipped or moved checkpoints (rank 0's console).
        is_main: rank 0, the one that moves files.

    Raises:
        InputNotFoundError: an explicit checkpoint that does not exist.
        CheckpointError: not a checkpoint of ``task``; with ``"auto"``, none of the
            checkpoints in ``folder`` loads.
        RunDirError: an explicit checkpoint from outside ``folder`` while ``folder`` holds
            checkpoints of its own (resuming would mix two runs).
    """
    folder = Path(folder)
    if resume == "auto":
        found = _newest_loadable(folder, report)
        if found is None:
            return None
        path, state = found
    else:
        path = Path(resume)
        if not path.is_file():
            raise InputNotFoundError(f"checkpoint not found: {resume}")
        state = load_checkpoint(path)
    config = state.get("config")
    found_task = config.get("task") if isinstance(config, dict) else None
    if found_task != task:
        what = (
            f"a {found_task} checkpoint"
            if found_task in ("pretrain", "finetune")
            else "no run checkpoint"
        )
        raise CheckpointError(f"{path}: {what}; 'lafs {task} --resume' needs a {task} checkpoint")
    missing = [k for k in (*keys, "step") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete {task} checkpoint (no '{missing[0]}')")
    step = int(state["step"])
    inside = path.resolve().parent == folder.resolve()
    others = [(s, p) for s, p in list_checkpoints(folder) if p.resolve() != path.resolve()]
    if others and not inside:
        raise RunDirError(
            f"{folder} holds checkpoints of another run: resuming from {path} would mix two "
            "runs; resume the latest with --resume auto, or resume into another run directory "
            "(--set run.output_dir=...)"
        )
    later = [(s, p) for s, p in others if s > step]
    if later and resume != "auto":
        _set_aside(folder, step, later, report, is_main)
    return path, state


def _newest_loadable(
    folder: Path, report: Callable[[str], None]
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``folder`` that loads, reporting each one passed over."""
    found = list_checkpoints(folder)
    skipped = []
    for _, path in reversed(found):
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            skipped.append(path)
            report(f"skipping {exc}")
            continue
        if skipped:
            report(
                f"resuming from {path.name}, the newest checkpoint that loads; "
                f"{len(skipped)} newer one(s) left in place and ignored"
            )
        return path, state
    if found:
        raise CheckpointError(
            f"{folder}: none of its {len(found)} checkpoint(s) loads; resume from a copy with "
            "--resume PATH, or start over with --overwrite"
        )
    return None


def _set_aside(
    folder: Path,
    step: int,
    later: list[tuple[int, Path]],
    report: Callable[[str], None],
    is_main: bool,
) -> None:
    """Move the checkpoints after ``step`` to ``folder/after_step_<step>-<time>/`` (rank 0)."""
    target = folder / f"after_step_{step:08d}-{time.strftime('%Y%m%d-%H%M%S')}"
    if is_main:
        target.mkdir(exist_ok=True)
        for _, p in later:
            os.replace(p, target / p.name)
    steps = [s for s, _ in later]
    report(
        f"resuming at step {step}: moved the {len(later)} later checkpoint(s) of this run "
        f"(steps {min(steps)}-{max(steps)}) to {target} (kept, not deleted)"
    )


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
