"""Rank-0 training logs: console lines, ``metrics.jsonl`` and TensorBoard."""

from __future__ import annotations

import json
import math
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
        if is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = (self.run_dir / "metrics.jsonl").open("a")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tb"))

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
