"""CPU time of a training process and its DataLoader workers, for compute budgets in CPU time
(robust to other load on a shared machine, unlike wall time)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

__all__ = ["cpu_seconds", "CPUClock"]

try:
    import resource
except ImportError:  # Windows: children are not counted
    resource = None  # type: ignore[assignment]


def _live_child_seconds(pid: int) -> float:
    """user + system seconds of a running child, from /proc (0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads), of its finished children and
    of its running ``multiprocessing`` children (DataLoader workers)."""
    total = time.process_time()
    if resource is not None:
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += done.ru_utime + done.ru_stime
    return total + sum(_live_child_seconds(p.pid) for p in multiprocessing.active_children())


class CPUClock:
    """CPU minutes spent since construction, less the spans measured by :meth:`exclude`, plus
    ``carried`` minutes (those of a run this one resumes)."""

    def __init__(self, carried: float = 0.0) -> None:
        self.start = cpu_seconds()
        self.excluded = 0.0
        self.carried = carried

    def minutes(self) -> float:
        """CPU minutes counted so far."""
        return self.carried + (cpu_seconds() - self.start - self.excluded) / 60.0

    def exclude(self) -> _Excluded:
        """Context manager: CPU time spent inside it is not counted (e.g. monitoring)."""
        return _Excluded(self)


class _Excluded:
    def __init__(self, clock: CPUClock) -> None:
        self.clock = clock

    def __enter__(self) -> None:
        self.t0 = cpu_seconds()

    def __exit__(self, *exc: object) -> None:
        self.clock.excluded += cpu_seconds() - self.t0
