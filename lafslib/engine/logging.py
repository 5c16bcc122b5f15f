"""Rank-0 training logs: console lines, ``metrics.jsonl`` and TensorBoard.

A resumed run calls :meth:`RunLogger.resume_at` with its step: rows and events logged after
that step by the interrupted process are dropped, so every step appears once.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["RunLogger", "format_eta"]


def format_eta(seconds: float) -> str:
    """``1h02m03s`` style duration."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class RunLogger:
    """Writes metrics on rank 0 only; other ranks get a silent logger.

    Args:
        run_dir: run folder (``metrics.jsonl`` and ``tb/`` go there).
        is_main: whether this process is rank 0.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, run_dir: str | Path, is_main: bool = True, tensorboard: bool = True):
        self.is_main = is_main
        self.run_dir = Path(run_dir)
        self._writer = None
        self._metrics = None
        self._tensorboard = tensorboard
        if is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = (self.run_dir / "metrics.jsonl").open("a")
            self._open_writer(None)

    def _open_writer(self, purge_step: int | None) -> None:
        if self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)

    def resume_at(self, step: int) -> int:
        """Forget what was logged after ``step`` (a resumed run logs those steps again).

        Rewrites ``metrics.jsonl`` without the rows past ``step`` (and a row cut by a kill) and
        has TensorBoard hide the events past it.

        Returns:
            The number of rows dropped.
        """
        if not self.is_main:
            return 0
        path = self.run_dir / "metrics.jsonl"
        self._metrics.close()
        kept, dropped = [], 0
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                keep = int(row["step"]) <= step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line + "\n")
            else:
                dropped += 1
        if dropped:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, path)
        self._metrics = path.open("a")
        if self._writer is not None and step > 0:
            self._writer.close()
            self._open_writer(step + 1)
        return dropped

    def log(self, step: int, metrics: dict[str, float], prefix: str = "train") -> None:
        """Record scalar ``metrics`` at ``step`` to metrics.jsonl and TensorBoard."""
        if not self.is_main:
            return
        row = {
            "step": step,
            "time": time.time(),
            **{f"{prefix}/{k}": v for k, v in metrics.items()},
        }
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for k, v in metrics.items():
                self._writer.add_scalar(f"{prefix}/{k}", v, step)

    def image(self, tag: str, image: np.ndarray, step: int = 0) -> None:
        """Log an HxWx3 uint8 image to TensorBoard."""
        if self.is_main and self._writer is not None:
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def print(self, message: str) -> None:
        """Print on rank 0."""
        if self.is_main:
            print(message, flush=True)

    def close(self) -> None:
        """Flush and close the files."""
        if self._metrics is not None:
            self._metrics.close()
        if self._writer is not None:
            self._writer.close()

    def line(
        self,
        step: int,
        total: int,
        images_per_s: float,
        elapsed: float,
        metrics: dict[str, float],
    ) -> None:
        """Console line with step, img/s, ETA and the metrics."""
        eta = elapsed / max(step, 1) * (total - step)
        parts = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.print(f"step {step}/{total}  {images_per_s:.1f} img/s  eta {format_eta(eta)}  {parts}")
