"""CPU-time accounting for budgets: this process, its finished and its running children."""

from __future__ import annotations

import multiprocessing
import time

from lafslib.engine.cputime import CPUClock, cpu_seconds


def _spin(seconds: float, done) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    done.set()
    time.sleep(5)  # stay alive: counted while running, through /proc


def test_running_child_cpu_is_counted() -> None:
    ctx = multiprocessing.get_context("fork")
    done = ctx.Event()
    before = cpu_seconds()
    child = ctx.Process(target=_spin, args=(0.6, done))
    child.start()
    try:
        assert done.wait(30)
        assert cpu_seconds() - before >= 0.5
    finally:
        child.terminate()
        child.join()


def test_excluded_spans_are_not_counted() -> None:
    clock = CPUClock()
    with clock.exclude():
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
    assert clock.minutes() * 60 < 0.2
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert clock.minutes() * 60 >= 0.3
