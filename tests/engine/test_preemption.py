"""Preemption: SIGTERM, SIGINT and SIGUSR1 finish the step, write its checkpoint, print one line
and exit 75; ``--resume auto`` then continues bitwise as an uninterrupted run, in one process
and under torchrun with 2 gloo ranks (where one rank's signal stops both at the same step)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lafslib.cli import main
from lafslib.engine.checkpoint import list_checkpoints, load_checkpoint
from lafslib.engine.finetune import FinetuneTask
from lafslib.engine.pretrain import PretrainTask
from lafslib.errors import INTERRUPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, name: str, task: str = "pretrain", **run) -> Path:
    data = yaml.safe_load((ROOT / f"recipes/demo/{task}_demo.yaml").read_text())
    data["run"].update(
        {"output_dir": str(tmp_path / name), "checkpoint_every": 100, "log_every": 1, **run}
    )
    data["run"]["tensorboard"] = False
    data["data"].update({"batch_size": 4, "synthetic_identities": 4, "synthetic_per_identity": 4})
    if task == "pretrain":
        data["views"]["local_views"] = 2
        data["head"]["out_dim"] = 64
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _signal_at(monkeypatch: pytest.MonkeyPatch, task: type, step: int, sig: int) -> None:
    """Send ``sig`` to this process inside the optimizer step that ends at ``step``."""
    real = task.after_step
    calls = []

    def after_step(self, scheduled):
        real(self, scheduled)
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(task, "after_step", after_step)


def _same(a: Path, b: Path, keys: tuple[str, ...]) -> None:
    x, y = load_checkpoint(a), load_checkpoint(b)
    assert x["step"] == y["step"]
    for key in keys:
        for name, tensor in x[key].items():
            torch.testing.assert_close(y[key][name], tensor, atol=0, rtol=0, msg=name)
    for name, value in x["optimizer"]["state"].items():
        for k, t in value.items():
            torch.testing.assert_close(y["optimizer"]["state"][name][k], t, atol=0, rtol=0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_checkpoints_the_step_and_the_resume_is_bitwise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    sig: int,
) -> None:
    assert main(["pretrain", str(_recipe(tmp_path, "straight", max_steps=5))]) == 0
    _signal_at(monkeypatch, PretrainTask, 3, sig)
    recipe = _recipe(tmp_path, "stopped", max_steps=5)
    assert main(["pretrain", str(recipe)]) == INTERRUPTED_EXIT_CODE
    out = capsys.readouterr()
    ckpt = tmp_path / "stopped/checkpoints/step_00000003.pt"
    assert [s for s, _ in list_checkpoints(ckpt.parent)] == [3]  # checkpoint_every is 100
    lines = [ln for ln in out.out.splitlines() if ln.startswith("stopped by")]
    assert lines == [
        f"stopped by {signal.Signals(sig).name} after step 3: saved {ckpt}; continue with the "
        "same command and --resume auto"
    ]
    assert "Traceback" not in out.err
    assert signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL)  # restored
    monkeypatch.undo()
    assert main(["pretrain", str(recipe), "--resume", "auto"]) == 0
    assert "resumed from" in capsys.readouterr().out
    _same(
        tmp_path / "straight/checkpoints/step_00000005.pt",
        tmp_path / "stopped/checkpoints/step_00000005.pt",
        ("student", "teacher", "loss"),
    )


def test_finetune_stops_on_a_signal_and_resumes_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = _recipe(tmp_path, "ft_straight", "finetune", max_steps=4)
    assert main(["finetune", str(straight)]) == 0
    _signal_at(monkeypatch, FinetuneTask, 2, signal.SIGTERM)
    recipe = _recipe(tmp_path, "ft_stopped", "finetune", max_steps=4)
    assert main(["finetune", str(recipe)]) == INTERRUPTED_EXIT_CODE
    assert (tmp_path / "ft_stopped/checkpoints/step_00000002.pt").is_file()
    assert not (tmp_path / "ft_stopped/export").exists()  # the run did not finish
    monkeypatch.undo()
    assert main(["finetune", str(recipe), "--resume", "auto"]) == 0
    _same(
        tmp_path / "ft_straight/checkpoints/step_00000004.pt",
        tmp_path / "ft_stopped/checkpoints/step_00000004.pt",
        ("model",),
    )


def test_sigterm_from_outside_during_a_run(tmp_path: Path) -> None:
    """The real thing: ``kill -TERM`` of a running ``lafs pretrain``: exit 75, one line, and
    the checkpoint of the step it names."""
    recipe = _recipe(tmp_path, "killed", max_steps=10_000)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "lafslib.cli", "pretrain", str(recipe)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "killed/metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED_EXIT_CODE, err[-2000:]
    (line,) = [ln for ln in out.splitlines() if ln.startswith("stopped by SIGTERM")]
    step = int(line.split("after step ")[1].split(":")[0])
    assert step >= 2 and f"step_{step:08d}.pt" in line and err.strip() == ""
    assert load_checkpoint(tmp_path / f"killed/checkpoints/step_{step:08d}.pt")["step"] == step


# a torchrun rank: sends itself SIGTERM inside step 3 on rank 1 only, then runs the CLI
RANK_SCRIPT = """
import os, signal, sys
from lafslib.cli import main
from lafslib.engine.pretrain import PretrainTask
if os.environ["RANK"] == sys.argv[1]:
    real, calls = PretrainTask.after_step, []
    def after_step(self, scheduled):
        real(self, scheduled)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
    PretrainTask.after_step = after_step
sys.exit(main(sys.argv[2:]))
"""


def _torchrun(script: Path, signal_rank: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(script), str(signal_rank), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.distributed
def test_under_torchrun_one_ranks_signal_stops_both_and_the_resume_is_bitwise(
    tmp_path: Path,
) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)  # 2 ranks of 4 of the 16 faces: 2 steps per epoch, 4 in all
    straight = _recipe(tmp_path, "straight", max_steps=4)
    proc = _torchrun(script, -1, "pretrain", str(straight))
    assert proc.returncode == 0, proc.stderr[-3000:]
    recipe = _recipe(tmp_path, "stopped", max_steps=4)
    proc = _torchrun(script, 1, "pretrain", str(recipe))
    assert proc.returncode != 0  # torchrun reports its ranks' exit code 75 as a failure
    assert f"exitcode  : {INTERRUPTED_EXIT_CODE}" in proc.stderr or "75" in proc.stderr
    ckpt = tmp_path / "stopped/checkpoints/step_00000003.pt"
    assert [s for s, _ in list_checkpoints(ckpt.parent)] == [3]
    assert proc.stdout.count("stopped by ") == 1
    assert f"stopped by a signal on another rank after step 3: saved {ckpt}" in proc.stdout
    proc = _torchrun(script, -1, "pretrain", str(recipe), "--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same(
        tmp_path / "straight/checkpoints/step_00000004.pt",
        tmp_path / "stopped/checkpoints/step_00000004.pt",
        ("student", "teacher", "loss"),
    )
