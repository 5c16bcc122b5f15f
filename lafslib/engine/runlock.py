"""One job per run directory: a lock file that names the process holding it.

``RUN/run.lock`` is created atomically (written to a temporary file, then hard-linked to its
name, which fails when the name exists) and holds ``{"pid", "host", "started"}``. A second job
started on the same directory, even at the same moment, finds it and stops with a
:class:`~lafslib.errors.RunDirError` that names the directory, the lock file and its holder,
before it writes anything. A lock left behind by a crashed job (its process is gone on this
host) is taken over; a lock held on another host is never guessed dead.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from lafslib.errors import RunDirError

__all__ = ["LOCK_NAME", "RunLock", "pid_alive"]

LOCK_NAME = "run.lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: Path) -> dict | None:
    """The lock's content, or None when it is gone or unreadable."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class RunLock:
    """Exclusive claim of a run directory by this process (rank 0 of a job).

    Args:
        run_dir: the run directory; created when missing.

    Example:
        >>> with RunLock("runs/demo"):  # doctest: +SKIP
        ...     train()
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or take over a stale one.

        Raises:
            RunDirError: another live job holds the directory (or a job on another host).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        tmp = self.run_dir / f".{LOCK_NAME}.{me['pid']}"
        tmp.write_text(json.dumps(me) + "\n")
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    self._remove_if_stale()
                    continue
                self.held = True
                return
        finally:
            tmp.unlink(missing_ok=True)
        self._refuse()

    def _remove_if_stale(self) -> None:
        """Delete the lock when its process is gone from this host."""
        holder = _read_holder(self.path)
        if holder is None or holder.get("host") != socket.gethostname():
            return
        if pid_alive(int(holder.get("pid", -1))):
            return
        # rename first: of two processes taking over the same stale lock, one wins the rename
        grave = self.run_dir / f".{LOCK_NAME}.stale.{os.getpid()}"
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        if _read_holder(grave) == holder:
            grave.unlink(missing_ok=True)
            print(
                f"{self.run_dir}: took over the lock of process {holder['pid']}, which is gone",
                flush=True,
            )
        else:  # a live job took the lock between the read and the rename: give it back
            os.rename(grave, self.path)

    def _refuse(self) -> None:
        holder = _read_holder(self.path) or {}
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
        if host == socket.gethostname():
            advice = (
                f"wait for it to finish or use another run directory (if process {pid} is no "
                f"lafs run, delete {self.path})"
            )
        else:
            advice = f"use another run directory, or delete {self.path} if no job on {host} uses it"
        raise RunDirError(
            f"{self.run_dir} is in use by another run (process {pid} on {host} since {since}, "
            f"lock file {self.path}); {advice} (--set run.output_dir=...)"
        )

    def release(self) -> None:
        """Delete the lock file if this process holds it."""
        if self.held:
            holder = _read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
