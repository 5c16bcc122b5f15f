"""Resuming where runs break on clusters: a corrupt newest checkpoint, an earlier checkpoint named
on purpose, a recipe edited between the runs, a NaN loss; each one line, nothing lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from lafslib.cli import main
from lafslib.engine.checkpoint import list_checkpoints, load_checkpoint
from lafslib.engine.pretrain import PretrainTask

ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, name: str = "run", **run) -> Path:
    data = yaml.safe_load((ROOT / "recipes/demo/pretrain_demo.yaml").read_text())
    data["run"].update({"output_dir": str(tmp_path / name), "checkpoint_every": 2, "log_every": 1})
    data["run"].update({"tensorboard": False, **run})
    data["data"].update({"batch_size": 4, "synthetic_identities": 4, "synthetic_per_identity": 4})
    data["views"]["local_views"] = 0
    data["head"]["out_dim"] = 64
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _students_equal(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for name, tensor in a["student"].items():
        torch.testing.assert_close(b["student"][name], tensor, atol=0, rtol=0, msg=name)


@pytest.mark.parametrize("damage", ["truncated", "zero-filled"])
def test_resume_auto_passes_over_a_damaged_newest_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture, damage: str
) -> None:
    recipe = _recipe(tmp_path, max_steps=4)
    assert main(["pretrain", str(recipe)]) == 0
    newest = tmp_path / "run/checkpoints/step_00000004.pt"
    original = load_checkpoint(newest)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(len(data)))
    capsys.readouterr()
    assert main(["pretrain", str(recipe), "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    reason = "truncated or damaged" if damage == "truncated" else "zero-filled"
    skipped = [ln for ln in out.splitlines() if ln.startswith("skipping")]
    assert len(skipped) == 1 and str(newest) in skipped[0] and reason in skipped[0]
    assert "tar" not in out and "weights_only" not in out and "pickle" not in out.lower()
    assert "resuming from step_00000002.pt" in out and "at step 2" in out
    _students_equal(original, load_checkpoint(newest))  # step 4 again, the same bits


def test_a_checkpoint_of_this_run_named_with_resume_path_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = _recipe(tmp_path, max_steps=6)
    assert main(["pretrain", str(recipe)]) == 0
    folder = tmp_path / "run/checkpoints"
    later = {p.name: load_checkpoint(p) for p in (folder / "step_00000006.pt",)}
    capsys.readouterr()
    assert main(["pretrain", str(recipe), "--resume", str(folder / "step_00000002.pt")]) == 0
    out = capsys.readouterr().out
    (aside,) = [p for p in folder.iterdir() if p.is_dir()]
    assert aside.name.startswith("after_step_00000002-") and str(aside) in out
    assert sorted(p.name for p in aside.iterdir()) == ["step_00000004.pt", "step_00000006.pt"]
    _students_equal(later["step_00000006.pt"], load_checkpoint(aside / "step_00000006.pt"))
    _students_equal(later["step_00000006.pt"], load_checkpoint(folder / "step_00000006.pt"))


def test_a_resume_that_changes_the_recipe_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = _recipe(tmp_path, max_steps=2)
    assert main(["pretrain", str(recipe)]) == 0
    config = (tmp_path / "run/config.yaml").read_text()
    args = ["pretrain", str(recipe), "--resume", "auto", "--set", "run.max_steps=4"]
    capsys.readouterr()
    changed = [*args, "--set", "optim.lr=0.01", "--set", "data.batch_size=8"]
    assert main(changed) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "optim.lr 0.0005 -> 0.01" in err and "data.batch_size 4 -> 8" in err
    assert "--allow-change data.batch_size --allow-change optim.lr" in err
    assert main([*changed, "--allow-change", "optim.lr"]) == 2  # batch size still refused
    assert "optim.lr" not in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(tmp_path / "run/checkpoints")] == [2]
    # harmless keys pass: logging frequency, workers, length of the run
    lr_change = [*args, "--set", "optim.lr=0.01", "--set", "run.log_every=2"]
    assert main([*lr_change, "--allow-change", "optim.lr"]) == 0
    assert "recipe changed from step 2 on: optim.lr" in capsys.readouterr().out
    assert (tmp_path / "run/config.yaml").read_text() == config  # the start's recipe stays
    (row,) = [json.loads(r) for r in (tmp_path / "run/config_changes.jsonl").open()]
    assert row["step"] == 2 and row["changes"]["optim.lr"] == {
        "old": 0.0005,
        "new": 0.01,
        "allowed": True,
    }
    assert row["changes"]["run.max_steps"]["allowed"] is False  # recorded, harmless
    rows = [json.loads(r) for r in (tmp_path / "run/metrics.jsonl").open()]
    # step 4 (logged every 2 steps now) runs above the whole schedule of the old peak lr
    assert [r["step"] for r in rows] == [1, 2, 4]
    assert rows[2]["train/lr"] > 5 * 0.0005 * 4 / 256
    assert load_checkpoint(tmp_path / "run/checkpoints/step_00000004.pt")["config"]["optim"][
        "lr"
    ] == pytest.approx(0.01)


def test_a_nan_loss_is_one_line_and_exit_2_with_the_checkpoints_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real = PretrainTask.loss

    def loss(self, batch, scheduled, step, micro):
        value, images = real(self, batch, scheduled, step, micro)
        return (value * float("nan") if step >= 2 else value), images

    monkeypatch.setattr(PretrainTask, "loss", loss)
    recipe = _recipe(tmp_path, max_steps=4)
    assert main(["pretrain", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lafs pretrain: error: loss is nan at step 3; stopping")
    assert len(err.splitlines()) == 1 and "--allow-change optim.lr" in err
    assert [s for s, _ in list_checkpoints(tmp_path / "run/checkpoints")] == [2]
    assert load_checkpoint(tmp_path / "run/checkpoints/step_00000002.pt")["step"] == 2
    assert main(["pretrain", str(recipe), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_damaged_checkpoint_messages_name_the_cause(tmp_path: Path) -> None:
    from lafslib.errors import CheckpointError

    cases = {
        "empty.pt": b"",
        "zeros.pt": bytes(1000),
        "text.pt": b"hello, not a checkpoint\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    good = tmp_path / "good.pt"
    torch.save({"step": 1, "w": torch.ones(100)}, good)
    (tmp_path / "half.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    expected = {
        "empty.pt": "empty file",
        "zeros.pt": "zero-filled, 1000 bytes",
        "text.pt": "not a torch.save archive",
        "half.pt": "truncated or damaged",
    }
    for name, cause in expected.items():
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(tmp_path / name)
        assert str(exc.value).startswith(f"{tmp_path / name}: not a loadable lafslib checkpoint")
        assert cause in str(exc.value) and "\n" not in str(exc.value)
    shutil.rmtree(tmp_path)
