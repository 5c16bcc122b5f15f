"""Recipe drift on resume: what a resumed run may change in the recipe of the run it continues.

A resume compares the new recipe with the one the checkpoint was trained with (its
``config``). A key that changes what the run computes (model, views, loss, data, batch size,
optimizer and schedule, seed, precision) is refused with one line listing each key,
``old -> new``, unless the user names it with ``--allow-change KEY`` (a key, a section such as
``optim``, or a glob such as ``optim.*lr``). Keys that only change how the run is watched or
how long it goes on pass: logging and checkpoint frequency, TensorBoard, threads, workers,
device, ``run.max_steps``, the periodic evaluation (``eval.*``), and ``run.max_cpu_minutes``
when the schedules do not follow the budget.

Every accepted change is appended to ``config_changes.jsonl`` in the run directory with the
step it takes effect at; ``config.yaml`` keeps the recipe the run started with.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lafslib.config import config_from_dict, config_to_dict
from lafslib.errors import CheckpointError, ConfigError

__all__ = ["HARMLESS", "CHANGES_FILE", "recipe_changes", "check_recipe_drift", "record_changes"]

CHANGES_FILE = "config_changes.jsonl"

HARMLESS = (
    "run.output_dir",
    "run.device",
    "run.threads",
    "run.log_every",
    "run.checkpoint_every",
    "run.keep_last",
    "run.deterministic",
    "run.compile",
    "run.tensorboard",
    "run.max_steps",
    "data.num_workers",
    "eval.*",
)
"""Keys a resume may change freely (globs); ``run.max_cpu_minutes`` too unless
``run.schedule_by_budget`` is on."""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key -> (old, new)`` for every dotted key whose value differs (missing: None).

    ``old`` is read into the current dataclasses first, so a key that a newer lafslib added
    compares at its default, the value the old run used.
    """
    with contextlib.suppress(ConfigError):  # else another version's recipe: compare as is
        old = config_to_dict(config_from_dict(old, "checkpoint"))
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _harmless(key: str, old: dict[str, Any]) -> bool:
    if key == "run.max_cpu_minutes":
        return not old.get("run", {}).get("schedule_by_budget", False)
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in HARMLESS)


def _allowed(key: str, allow: Sequence[str]) -> bool:
    return any(key == a or key.startswith(f"{a}.") or fnmatch.fnmatchcase(key, a) for a in allow)


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, str)) else str(value)


def check_recipe_drift(
    old: dict[str, Any], new: dict[str, Any], allow: Sequence[str], checkpoint: Path
) -> dict[str, dict[str, Any]]:
    """Refuse a resume whose recipe changes the meaning of the run, unless allowed.

    Args:
        old: the checkpoint's ``config``.
        new: the resumed run's resolved recipe (:func:`~lafslib.config.config_to_dict`).
        allow: the ``--allow-change`` keys, sections or globs.
        checkpoint: the checkpoint resumed (for the message).

    Returns:
        ``key -> {"old", "new", "allowed"}`` of every change (``allowed``: named by ``allow``;
        False for the harmless ones).

    Raises:
        CheckpointError: one line listing each refused key, ``old -> new``, and the way on.
    """
    changes = recipe_changes(old, new)
    refused = [k for k in changes if not _harmless(k, old) and not _allowed(k, allow)]
    if refused:
        listed = ", ".join(f"{k} {_show(changes[k][0])} -> {_show(changes[k][1])}" for k in refused)
        flags = " ".join(f"--allow-change {k}" for k in refused)
        raise CheckpointError(
            f"{checkpoint}: the recipe differs from the run's in keys that change what it "
            f"trains: {listed}; resume with the run's values, or accept the change with {flags}"
        )
    return {
        k: {"old": o, "new": n, "allowed": not _harmless(k, old)} for k, (o, n) in changes.items()
    }


def record_changes(
    run_dir: str | Path, step: int, checkpoint: Path, changes: dict[str, dict[str, Any]]
) -> Path | None:
    """Append the changes a resume made to ``run_dir/config_changes.jsonl`` (one JSON line:
    the step they take effect at, the checkpoint, the time, the command); None when there are
    none."""
    if not changes:
        return None
    path = Path(run_dir) / CHANGES_FILE
    row = {
        "step": step,
        "checkpoint": str(checkpoint),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "changes": changes,
    }
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return path
