"""Run directories: resolved ``config.yaml`` and ``env.json`` (versions, git SHA, world size)."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from lafslib.config import dump_config

__all__ = ["prepare_run_dir", "environment"]


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


def prepare_run_dir(cfg: Any, world_size: int, is_main: bool) -> Path:
    """Create the run folder and, on rank 0, write ``config.yaml`` and ``env.json``."""
    run_dir = Path(cfg.run.output_dir)
    if is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
        (run_dir / "env.json").write_text(json.dumps(environment(world_size), indent=2) + "\n")
    return run_dir
