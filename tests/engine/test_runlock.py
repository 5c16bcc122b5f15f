"""One job per run directory: the lock refuses a second job, and a crashed job's lock is taken
over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lafslib.cli import main
from lafslib.engine.runlock import LOCK_NAME, RunLock
from lafslib.errors import RunDirError

ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, run: Path, steps: int = 2) -> Path:
    data = yaml.safe_load((ROOT / "recipes/demo/pretrain_demo.yaml").read_text())
    data["run"].update(
        {"output_dir": str(run), "checkpoint_every": 1, "log_every": 1, "max_steps": steps}
    )
    data["run"]["tensorboard"] = False
    data["data"].update({"batch_size": 4, "synthetic_identities": 2, "synthetic_per_identity": 4})
    data["views"]["local_views"] = 0
    data["head"]["out_dim"] = 64
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    return recipe


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_refuses_a_second_job_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with RunLock(run) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        assert main(["pretrain", str(_recipe(tmp_path, run))]) == 2
        err = capsys.readouterr().err
        assert str(run) in err and str(run / LOCK_NAME) in err and "in use" in err
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    assert not run.exists() or not any(run.iterdir())  # released: the lock file is gone


def test_lock_of_a_crashed_job_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": 0.0}
    (run / LOCK_NAME).write_text(json.dumps(stale))
    assert main(["pretrain", str(_recipe(tmp_path, run))]) == 0
    out = capsys.readouterr().out
    assert f"took over the lock of process {stale['pid']}" in out
    assert (run / "checkpoints" / "step_00000002.pt").is_file()
    assert not (run / LOCK_NAME).exists()


def test_lock_held_on_another_host_is_never_guessed_dead(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    other = {"pid": _dead_pid(), "host": socket.gethostname() + "-elsewhere", "started": 0.0}
    (run / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(RunDirError, match="elsewhere") as err:
        RunLock(run).acquire()
    assert f"delete {run / LOCK_NAME}" in str(err.value)
    assert json.loads((run / LOCK_NAME).read_text()) == other


def test_two_jobs_started_at_once_on_one_new_run_directory(tmp_path: Path) -> None:
    """The issue's case: two ``lafs pretrain`` on the same new directory at the same moment.
    One trains, the other stops with exit code 2 naming the directory; the run holds one
    history (each step logged once, its checkpoints from one process)."""
    run = tmp_path / "run"
    recipe = _recipe(tmp_path, run, steps=4)
    cmd = [sys.executable, "-m", "lafslib.cli", "pretrain", str(recipe)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, _, err in results]
    refused = next(err for code, _, err in results if code == 2)
    assert str(run) in refused  # "in use" (the lock) or "already holds" (the finished run)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not (run / LOCK_NAME).exists()
