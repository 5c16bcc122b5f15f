"""Run directories: resolved ``config.yaml`` and ``env.json`` (versions, git SHA, world size).

A run directory holds one run. Starting a run in a directory that is not empty is refused
(:class:`~lafslib.errors.RunDirError`, naming the directory and the ways forward) unless the
run resumes (``--resume``), or ``overwrite`` moves the old run aside to
``<dir>.replaced-<time>`` first: a rerun never mixes its config, metrics or checkpoints with
another run's, and never deletes them. The job holds the directory's lock
(:class:`~lafslib.engine.runlock.RunLock`) from the claim to its end, so two jobs started on
one directory at the same moment cannot both write there.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lafslib.config import dump_config
from lafslib.engine.checkpoint import list_checkpoints, remove_stale_temporaries
from lafslib.engine.distributed import broadcast_error
from lafslib.engine.runlock import LOCK_NAME, RunLock
from lafslib.errors import RunDirError

__all__ = ["prepare_run_dir", "claim_run_dir", "write_run_files", "environment"]


def environment(world_size: int) -> dict[str, Any]:
    """Versions, git SHA and world size of this run."""
    from lafslib import __version__

    sha = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return {
        "lafslib": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git_sha": sha,
        "world_size": world_size,
        "argv": sys.argv,
    }


def _products(run_dir: Path) -> str | None:
    """What a run in ``run_dir`` has produced (None: nothing, e.g. a start that failed)."""
    found = list_checkpoints(run_dir / "checkpoints")
    if found:
        return f"a run with {len(found)} checkpoint(s) up to step {found[-1][0]}"
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        return "a run with logged metrics and no checkpoint yet"
    return None


def claim_run_dir(
    run_dir: str | Path, resume: str | None = None, overwrite: bool = False
) -> Path | None:
    """Check that a run may write into ``run_dir`` (rank 0, before anything is written).

    Args:
        run_dir: ``run.output_dir``.
        resume: the ``--resume`` value: a resumed run continues the run already there.
        overwrite: move a previous run aside to ``<run_dir>.replaced-<time>`` (never deleted).

    Returns:
        Where the previous run was moved, or None.

    Raises:
        RunDirError: ``run_dir`` holds a run (checkpoints or logged metrics) and neither
            ``resume`` nor ``overwrite`` is given, or holds files that are no lafslib run, or
            is not a folder.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError(f"{run_dir}: --resume and --overwrite exclude each other")
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run.output_dir is a file, not a folder")
    if not any(not p.name.startswith((LOCK_NAME, f".{LOCK_NAME}")) for p in run_dir.iterdir()):
        return None
    markers = ("config.yaml", "checkpoints", "metrics.jsonl")
    if not any((run_dir / name).exists() for name in markers):
        raise RunDirError(
            f"{run_dir} is not empty and holds no lafslib run (no config.yaml, no checkpoints/); "
            "choose an empty or new run directory (--set run.output_dir=...)"
        )
    products = _products(run_dir)
    if resume or products is None:  # continue it, or reuse a start that produced nothing
        return None
    if overwrite:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
        run_dir.rename(target)
        return target
    raise RunDirError(
        f"{run_dir} already holds {products}; continue it with --resume auto, "
        "use another run directory (--set run.output_dir=...), or start over with --overwrite "
        f"(moves it to {run_dir.name}.replaced-<time>)"
    )


def prepare_run_dir(
    cfg: Any, world_size: int, is_main: bool, resume: str | None = None, overwrite: bool = False
) -> tuple[Path, RunLock | None]:
    """Lock and claim the run folder (:func:`claim_run_dir`) and, on rank 0, create
    ``checkpoints/`` and remove the temporary files of killed checkpoint writes.
    ``config.yaml`` and ``env.json`` follow once the run has started (:func:`write_run_files`),
    so a resume that fails leaves them as they were. A refusal on rank 0 is raised on every
    rank.

    Returns:
        The run directory, and on rank 0 the held lock (the caller releases it at the end).

    Raises:
        RunDirError: the folder is locked by another job or may not be written (rank 0's
            message, on every rank).
    """
    run_dir = Path(cfg.run.output_dir)
    lock = None
    error = None
    if is_main:
        try:
            lock = _lock_and_claim(run_dir, resume, overwrite)
        except RunDirError as exc:
            error = str(exc)
    error = broadcast_error(error)
    if error is not None:
        raise RunDirError(error)
    return run_dir, lock


def _lock_and_claim(run_dir: Path, resume: str | None, overwrite: bool) -> RunLock:
    """Rank 0: take the lock of ``run_dir``, claim it, and prepare ``checkpoints/``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run.output_dir is a file, not a folder")
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        moved = claim_run_dir(run_dir, resume, overwrite)
        if moved is not None:  # the lock went with the old run: take it in the new folder
            lock.held = False
            (moved / LOCK_NAME).unlink(missing_ok=True)
            lock.acquire()
            print(f"moved the previous run in {run_dir} to {moved}", flush=True)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir / "checkpoints")
    except BaseException:
        lock.release()
        raise
    return lock


def write_run_files(
    run_dir: str | Path, cfg: Any, world_size: int, is_main: bool, resumed: bool = False
) -> None:
    """On rank 0, write the resolved ``config.yaml`` and ``env.json`` of the run.

    A resumed run keeps the ``config.yaml`` its run started with (the changes a resume makes
    go to ``config_changes.jsonl``, :mod:`~lafslib.engine.recipe_drift`); it writes one only
    where there is none (a run resumed from another run's checkpoint).
    """
    if is_main:
        run_dir = Path(run_dir)
        if not (resumed and (run_dir / "config.yaml").is_file()):
            dump_config(cfg, run_dir / "config.yaml")
        (run_dir / "env.json").write_text(json.dumps(environment(world_size), indent=2) + "\n")
