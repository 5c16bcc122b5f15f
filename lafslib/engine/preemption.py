"""Stopping a run cleanly on a signal: the idea of PyTorch Lightning's signal connector.

SLURM and Kubernetes send SIGTERM before they kill a preempted job, SLURM can send SIGUSR1
ahead of the time limit (``--signal=USR1@120``), and Ctrl-C sends SIGINT. While the training
loop runs, :class:`StopSignals` turns each of them into a flag and nothing else: the step in
progress finishes, then the loop asks :meth:`StopSignals.requested` after the step. Under
torchrun the flag is all-reduced (maximum), so every rank stops after the same step even when
only one rank received the signal; the loop then writes the checkpoint of that step
atomically, prints one line saying where it is and how to resume, and exits with
:data:`~lafslib.errors.INTERRUPTED_EXIT_CODE` (75).

A second Ctrl-C while the step finishes stops at once (``KeyboardInterrupt``), as Ctrl-C
does without this handler. DataLoader workers ignore the three signals (their parent stops
them): a worker killed by SIGTERM would otherwise fail the step that is meant to finish.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch

__all__ = ["STOP_SIGNALS", "StopSignals", "ignore_stop_signals", "shield_loader_workers"]

STOP_SIGNALS = tuple(
    s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None
)


def ignore_stop_signals(*_: Any) -> None:
    """Make this process (a DataLoader worker) ignore SIGTERM, SIGINT and SIGUSR1."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class _ShieldedInit:
    """A DataLoader ``worker_init_fn`` that ignores the stop signals, then calls ``inner``."""

    def __init__(self, inner: Callable[[int], Any] | None) -> None:
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        ignore_stop_signals()
        if self.inner is not None:
            self.inner(worker_id)


def shield_loader_workers(loader: torch.utils.data.DataLoader) -> None:
    """Have ``loader``'s worker processes ignore the stop signals (no-op without workers)."""
    if loader.num_workers and not isinstance(loader.worker_init_fn, _ShieldedInit):
        loader.worker_init_fn = _ShieldedInit(loader.worker_init_fn)


class StopSignals:
    """A context manager that turns SIGTERM, SIGINT and SIGUSR1 into a stop request.

    Handlers are installed only in the main thread (Python delivers signals there) and the
    previous ones come back on exit.

    Attributes:
        received: the name of the first signal received (None: none).
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.received is None:
            self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, device: torch.device) -> bool:
        """True when this rank or any other received a stop signal (a collective under
        torchrun: every rank calls it after every step)."""
        import torch.distributed as dist

        flag = self.received is not None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            box = torch.tensor([float(flag)], device=device)
            dist.all_reduce(box, op=dist.ReduceOp.MAX)
            return bool(box.item())
        return flag
