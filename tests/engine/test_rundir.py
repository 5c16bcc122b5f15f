"""Run directories: one run per folder, resume without repeated metrics, safe pruning."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lafslib.cli import main
from lafslib.engine.checkpoint import (
    list_checkpoints,
    prune_checkpoints,
    remove_stale_temporaries,
    resume_checkpoint,
    save_checkpoint,
)
from lafslib.engine.logging import RunLogger
from lafslib.errors import CheckpointError, DiskFullError, RunDirError

ROOT = Path(__file__).resolve().parents[2]


def _pretrain_args(tmp_path: Path, run: Path, *sets: str) -> list[str]:
    data = yaml.safe_load((ROOT / "recipes/demo/pretrain_demo.yaml").read_text())
    data["run"].update({"output_dir": str(run), "checkpoint_every": 1, "log_every": 1})
    data["run"]["tensorboard"] = False
    data["data"].update({"batch_size": 4, "synthetic_identities": 2, "synthetic_per_identity": 4})
    data["views"]["local_views"] = 2
    data["head"]["out_dim"] = 64
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    args = ["pretrain", str(recipe)]
    for item in sets:
        args += ["--set", item]
    return args


def _tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_rerun_into_a_finished_run_is_refused_or_moves_it_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(_pretrain_args(tmp_path, run, "run.max_steps=3", "run.keep_last=2")) == 0
    before = _tree(run)
    capsys.readouterr()
    # the rerun: same command, another lr, no --resume
    assert main(_pretrain_args(tmp_path, run, "run.max_steps=2", "optim.lr=0.01")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(run) in err and "--resume auto" in err and "--overwrite" in err
    assert "up to step 3" in err
    assert _tree(run) == before  # config, env, metrics and checkpoints untouched
    # --overwrite: the old run is moved aside whole, the new one starts empty
    assert main([*_pretrain_args(tmp_path, run, "run.max_steps=2"), "--overwrite"]) == 0
    (old,) = tmp_path.glob("run.replaced-*")
    assert _tree(old) == before
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1, 2]
    rows = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2]
    with pytest.raises(SystemExit) as exc:  # argparse: they exclude each other
        main([*_pretrain_args(tmp_path, run), "--overwrite", "--resume", "auto"])
    assert exc.value.code == 2


def test_a_folder_that_holds_no_run_is_never_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    for extra in ([], ["--resume", "auto"], ["--overwrite"]):
        assert main([*_pretrain_args(tmp_path, run, "run.max_steps=1"), *extra]) == 2
        assert "holds no lafslib run" in capsys.readouterr().err
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def test_resume_drops_metrics_rows_past_the_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(_pretrain_args(tmp_path, run, "run.max_steps=3")) == 0
    # as if killed after logging step 3 (one row half-written) but before its checkpoint
    (run / "checkpoints/step_00000003.pt").unlink()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "trai')
    assert main([*_pretrain_args(tmp_path, run, "run.max_steps=4"), "--resume", "auto"]) == 0
    rows = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]


def test_run_logger_resume_at_keeps_rows_up_to_the_step(tmp_path: Path) -> None:
    logger = RunLogger(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        logger.log(step, {"loss": 1.0})
    assert logger.resume_at(2) == 1
    logger.log(3, {"loss": 0.5})
    logger.close()
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 1.0), (2, 1.0), (3, 0.5)]


def test_pruning_never_deletes_checkpoints_after_the_one_written(tmp_path: Path) -> None:
    for step in (3, 4, 12, 15, 16):
        save_checkpoint(tmp_path / f"step_{step:08d}.pt", {"step": step})
    prune_checkpoints(tmp_path, keep_last=3, upto=4)  # the issue: 3 and 4 were deleted
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4, 12, 15, 16]
    prune_checkpoints(tmp_path, keep_last=2, upto=16)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [15, 16]


def test_resuming_refuses_to_mix_two_histories(tmp_path: Path) -> None:
    ckpt = tmp_path / "run/checkpoints"
    state = {"config": {"task": "pretrain"}, "step": 2, "student": {}}
    save_checkpoint(ckpt / "step_00000002.pt", state)
    save_checkpoint(ckpt / "step_00000004.pt", {**state, "step": 4})
    other = save_checkpoint(tmp_path / "other/step_00000001.pt", {**state, "step": 1})
    with pytest.raises(RunDirError, match="of another run"):
        resume_checkpoint(ckpt, str(other), "pretrain", ["student"])
    with pytest.raises(CheckpointError, match="a pretrain checkpoint; 'lafs finetune"):
        resume_checkpoint(ckpt, "auto", "finetune", ["model"])
    with pytest.raises(CheckpointError, match="no 'teacher'"):
        resume_checkpoint(ckpt, "auto", "pretrain", ["student", "teacher"])
    path, found = resume_checkpoint(ckpt, "auto", "pretrain", ["student"])
    assert path.name == "step_00000004.pt" and found["step"] == 4
    # an earlier checkpoint of this run, named: its later ones are moved aside, not mixed in
    lines: list[str] = []
    path, found = resume_checkpoint(
        ckpt, str(ckpt / "step_00000002.pt"), "pretrain", ["student"], lines.append
    )
    assert found["step"] == 2 and [s for s, _ in list_checkpoints(ckpt)] == [2]
    (aside,) = ckpt.glob("after_step_00000002-*/step_00000004.pt")
    assert len(lines) == 1 and "steps 4-4" in lines[0] and str(aside.parent) in lines[0]


def test_temporaries_of_killed_writes_are_removed_on_restart(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a finished process: its pid is free
    dead = tmp_path / f".step_00000002.pt.tmp-{child.pid}"
    live = tmp_path / f".step_00000003.pt.tmp-{os.getpid()}"  # a write in progress
    for p in (dead, live):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and live.exists()


def test_a_failed_write_leaves_no_temporary(tmp_path: Path) -> None:
    class Unsaveable:
        def __reduce__(self):
            raise OSError("No space left on device")

    with pytest.raises(DiskFullError, match="step_00000001.pt: no space left on device"):
        save_checkpoint(tmp_path / "step_00000001.pt", {"x": Unsaveable(), "t": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []


def test_a_start_that_produced_nothing_is_no_run_to_protect(tmp_path: Path) -> None:
    run = tmp_path / "run"
    missing = f"data.train={tmp_path / 'nowhere'}"
    assert main(_pretrain_args(tmp_path, run, "run.max_steps=1", missing)) == 2
    assert (run / "checkpoints").is_dir() and not (run / "config.yaml").exists()
    assert main(_pretrain_args(tmp_path, run, "run.max_steps=1")) == 0  # no --resume needed


def test_a_resume_that_does_not_fit_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(_pretrain_args(tmp_path, run, "run.max_steps=1")) == 0
    before = _tree(run)
    capsys.readouterr()
    args = [
        *_pretrain_args(tmp_path, run, "run.max_steps=2", "head.out_dim=32"),
        "--resume",
        "auto",
    ]
    assert main(args) == 2  # refused before anything is loaded: the recipe changed the head
    assert "head.out_dim 64 -> 32" in capsys.readouterr().err
    assert main([*args, "--allow-change", "head.out_dim"]) == 2  # allowed, but it cannot fit
    err = capsys.readouterr().err
    assert "step_00000001.pt: does not fit this recipe" in err and "size mismatch" in err
    assert _tree(run) == before  # config.yaml, env.json and metrics.jsonl as they were
