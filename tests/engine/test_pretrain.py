"""Pretraining: schedules, EMA, atomic checkpoints, smoke runs and resume equivalence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lafslib.cli import main
from lafslib.config import ConfigError, load_recipe
from lafslib.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from lafslib.engine.ema import TeacherEMA, update_ema
from lafslib.engine.pretrain import pretrain
from lafslib.engine.sampler import ResumableSampler
from lafslib.engine.schedules import warmup_cosine
from lafslib.models import load_export

ROOT = Path(__file__).resolve().parents[2]


def test_ema() -> None:
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = 0.9 * a.weight.detach() + 0.1 * b.weight.detach()
    update_ema(a, b, 0.9)
    torch.testing.assert_close(a.weight.detach(), expected)


def test_sampler_world_size_independent() -> None:
    one = list(ResumableSampler(40, 8, 0, 1, seed=3))
    r0 = list(ResumableSampler(40, 4, 0, 2, seed=3))
    r1 = list(ResumableSampler(40, 4, 1, 2, seed=3))
    for k in range(5):
        assert sorted(one[8 * k : 8 * k + 8]) == sorted(
            r0[4 * k : 4 * k + 4] + r1[4 * k : 4 * k + 4]
        )
    s = ResumableSampler(40, 8, seed=3)
    s.set_epoch(0, start_batch=2)
    assert list(s) == one[16:]


def _recipe(tmp_path: Path, name: str, **over) -> Path:
    data = yaml.safe_load((ROOT / "recipes/demo/pretrain_demo.yaml").read_text())
    data["run"].update({"output_dir": str(tmp_path / name), "checkpoint_every": 2, "log_every": 1})
    data["data"].update({"batch_size": 4, "synthetic_identities": 4, "synthetic_per_identity": 4})
    data["views"]["local_views"] = 2
    for k, v in over.items():
        section, key = k.split("__")
        data.setdefault(section, {})[key] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "kind,temp_schedule,temps",
    # warmup 0.07 -> 0.04 over 1 epoch of 4 steps: DINO keeps 0.07 through epoch 0 (per epoch);
    # per step it is linspace(0.07, 0.04, 4)
    [("lafs", "epoch", [0.07, 0.07]), ("multicrop", "step", [0.07, 0.06])],
)
def test_smoke_and_export(tmp_path: Path, kind: str, temp_schedule: str, temps: list) -> None:
    recipe = _recipe(
        tmp_path,
        kind,
        views__kind=kind,
        run__max_steps=2,
        loss__teacher_temp_schedule=temp_schedule,
    )
    assert main(["pretrain", str(recipe)]) == 0
    run = tmp_path / kind
    assert (run / "config.yaml").is_file() and (run / "env.json").is_file()
    assert list((run / "tb").iterdir())
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "train/teacher_entropy" in rows[-1]
    assert [yaml.safe_load(r)["train/teacher_temp"] for r in rows] == pytest.approx(temps)
    assert load_recipe(run / "config.yaml").views.kind == kind  # resolved config is a recipe
    assert main(["export", str(run)]) == 0
    model = load_export(run / "export")
    state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    torch.testing.assert_close(
        model.backbone.state_dict()["pos_embed"], state["teacher"]["backbone.pos_embed"]
    )
    # the export embeds with the teacher's SSL feature (the normed CLS token), not the untrained
    # embedding head, and says so in model.json
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["feature"] == "ssl" and info["feature_dim"] == model.backbone.ssl_dim
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.backbone.forward_features(x)[:, 0])


def test_periodic_verification_of_the_teacher(tmp_path: Path, faces_mini: Path) -> None:
    recipe = _recipe(
        tmp_path,
        "mon",
        run__max_steps=2,
        eval__every=2,
        eval__bins=[str(faces_mini / "lfw_mini.bin")],
    )
    pretrain(load_recipe(recipe))
    rows = [yaml.safe_load(r) for r in (tmp_path / "mon/metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/lfw_mini/accuracy" in r]
    assert (
        len(evals) == 1 and evals[0]["step"] == 2 and 0 <= evals[0]["eval/lfw_mini/accuracy"] <= 1
    )
    # the monitor scores the feature the export embeds with: same accuracy through lafs eval
    report = tmp_path / "report"
    assert main(["export", str(tmp_path / "mon")]) == 0
    args = ["--bin", str(faces_mini / "lfw_mini.bin"), "--out", str(report), "--device", "cpu"]
    assert main(["eval", "--model", str(tmp_path / "mon" / "export"), *args]) == 0
    (result,) = json.loads((report / "report.json").read_text())["results"].values()
    assert result["accuracy"] == pytest.approx(evals[0]["eval/lfw_mini/accuracy"], abs=1e-9)


NEIGHBOURS = {"loss__neighbour_weight": 0.5, "loss__neighbour_queue": 6, "loss__neighbour_k": 2}


@pytest.mark.parametrize("extra", [{}, NEIGHBOURS], ids=["dino", "neighbours"])
def test_resume_equivalence(tmp_path: Path, extra: dict) -> None:
    straight = load_recipe(_recipe(tmp_path, "a", run__max_steps=4, **extra))
    pretrain(straight)
    halted = load_recipe(_recipe(tmp_path, "b", run__max_steps=2, **extra))
    pretrain(halted)
    resumed = load_recipe(_recipe(tmp_path, "b", run__max_steps=4, **extra))
    pretrain(resumed, resume="auto")
    a = load_checkpoint(tmp_path / "a/checkpoints/step_00000004.pt")
    b = load_checkpoint(tmp_path / "b/checkpoints/step_00000004.pt")
    for key in ("student", "teacher"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, atol=0, rtol=0, msg=name)
    torch.testing.assert_close(a["loss"]["center"], b["loss"]["center"], atol=0, rtol=0)
    if extra:
        # 4 steps of 4 images: the queue of 6 holds the last 6 teacher outputs of global view 1
        assert int(a["neighbours"]["count"]) == 16
        torch.testing.assert_close(a["neighbours"], b["neighbours"], atol=0, rtol=0)


def test_neighbour_targets_change_the_loss(tmp_path: Path) -> None:
    """Step 1 has an empty queue (the plain DINO loss); from step 2 the loss mixes in the
    neighbours' targets, so the runs part there."""
    plain = pretrain(load_recipe(_recipe(tmp_path, "plain", run__max_steps=3)))
    mixed = pretrain(load_recipe(_recipe(tmp_path, "mixed", run__max_steps=3, **NEIGHBOURS)))
    losses = [
        [yaml.safe_load(r)["train/dino_loss"] for r in (run / "metrics.jsonl").open()]
        for run in (plain, mixed)
    ]
    assert losses[0][0] == losses[1][0] and losses[0][1] != losses[1][1]
    recipe = _recipe(tmp_path, "bad", loss__neighbour_k=7, loss__neighbour_queue=6)
    with pytest.raises(ConfigError, match="neighbour_k is 7"):
        load_recipe(recipe)


def test_checkpoint_survives_sigkill_during_write(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    # the child stalls inside the write (after the data, before the rename) and is killed there
    script = (
        "import os, sys, time, torch\n"
        "from lafslib.engine import checkpoint\n"
        "def stalled_fsync(fd):\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        "checkpoint.os.fsync = stalled_fsync\n"
        f"checkpoint.save_checkpoint({str(path)!r}, {{'step': 2, 'w': torch.zeros(3)}})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert list(tmp_path.glob(".ck.pt.tmp-*"))  # the new checkpoint is half-way
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_untrusted_checkpoint_is_not_executed(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ValueError, match="not a loadable"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.distributed
@pytest.mark.parametrize("extra", [{}, NEIGHBOURS], ids=["dino", "neighbours"])
def test_two_gloo_processes_match_one(tmp_path: Path, extra: dict) -> None:
    """Same steps with 2 ranks of 4 images as with 1 of 8; with nearest-neighbour targets the
    ranks' queues hold both ranks' images (step 2 looks up those of step 1)."""
    if extra:  # a queue that keeps whole batches: the ranks' images come in another order
        extra = {**extra, "loss__neighbour_queue": 16}
    single = _recipe(tmp_path, "one", run__max_steps=2, data__batch_size=8, **extra)
    pretrain(load_recipe(single))
    double = _recipe(tmp_path, "two", run__max_steps=2, data__batch_size=4, **extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "lafslib.cli", "pretrain", str(double)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout
    a = load_checkpoint(tmp_path / "one/checkpoints/step_00000002.pt")
    b = load_checkpoint(tmp_path / "two/checkpoints/step_00000002.pt")
    torch.testing.assert_close(b["loss"]["center"], a["loss"]["center"], atol=1e-6, rtol=1e-5)
    for name, tensor in a["student"].items():
        torch.testing.assert_close(b["student"][name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    la = [
        yaml.safe_load(r)["train/loss"]
        for r in (tmp_path / "one/metrics.jsonl").read_text().splitlines()
    ]
    lb = [
        yaml.safe_load(r)["train/loss"]
        for r in (tmp_path / "two/metrics.jsonl").read_text().splitlines()
    ]
    assert la == pytest.approx(lb, rel=1e-5)
    if extra:
        assert int(b["neighbours"]["count"]) == 16


@pytest.mark.parametrize(
    "recipe", sorted((ROOT / "recipes" / "pretrain").glob("*.yaml")), ids=lambda p: p.stem
)
def test_shipped_recipes_run_at_tiny_size(recipe: Path, tmp_path: Path) -> None:
    overrides = [
        f"run.output_dir={tmp_path / recipe.stem}",
        "run.max_steps=1",
        "data.train=synthetic",
        "data.landmarks=null",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.max_images=8",
        "model.name=vit_test",
        "model.kwargs={}",
        "head.out_dim=128",
        "views.local_views=2",
        "views.landmark_source=template",
        "init=null",
    ]
    args = ["pretrain", str(recipe)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    assert latest_checkpoint(tmp_path / recipe.stem / "checkpoints") is not None


def test_learned_landmark_source_and_init(faces_mini: Path, tmp_path: Path) -> None:
    """LAFS views from a Part fViT's landmark CNN, student/teacher started from its export.

    The export is an untrained Part fViT standing in for a stage-1 model (plumbing only)."""
    from safetensors.torch import load_file

    from lafslib.landmarks.detectors import LearnedLandmarkDetector
    from lafslib.landmarks.store import load_landmarks
    from lafslib.models import create_model, save_export

    torch.manual_seed(3)
    stage1 = save_export(create_model("part_fvit_test").eval(), tmp_path / "stage1")
    run = tmp_path / "run"
    sets = [
        f"run.output_dir={run}", "run.max_steps=1", f"data.train={faces_mini / 'identities'}",
        "data.max_images=8", "data.batch_size=4", "views.kind=lafs", "views.local_views=2",
        "views.landmark_source=net", f"views.landmark_net={stage1}", f"init={stage1}",
        "model.name=part_fvit_test", "model.kwargs={freeze_landmarks: true}", "head.out_dim=64",
    ]  # fmt: skip
    args = ["pretrain", str(ROOT / "recipes/demo/pretrain_demo.yaml")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    table = load_landmarks(run / "landmarks_net.npz")
    assert len(table) == 100 and table.num_points == 196  # every image of the source
    first = sorted(p for p in (faces_mini / "identities").rglob("*.jpg"))[0]
    key = first.relative_to(faces_mini / "identities").as_posix()
    from lafslib.io import read_image

    expected = LearnedLandmarkDetector(stage1).detect(read_image(first))[0].landmarks
    np.testing.assert_allclose(table[key], expected, atol=1e-3)
    state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    exported = load_file(str(stage1 / "model.safetensors"))
    for name in ("student", "teacher"):  # the frozen landmark CNN keeps the stage-1 weights
        for k, v in exported.items():
            if k.startswith("landmark_net.") and v.is_floating_point():
                torch.testing.assert_close(state[name]["backbone." + k], v, msg=k)
    bad = [*args[:2], "--set", f"run.output_dir={tmp_path / 'bad'}", "--set",
           "views.landmark_source=net", "--set", "views.kind=lafs"]  # fmt: skip
    assert main(bad) == 2  # no views.landmark_net: a clear recipe error before any work


@pytest.mark.parametrize("tensorboard", [True, False])
def test_pretraining_starts_when_the_first_image_is_unreadable(
    tmp_path: Path, face_folder, tensorboard: bool
) -> None:
    files = face_folder(tmp_path / "faces", identities=2, per_identity=4)
    files[0].write_bytes(b"")
    recipe = _recipe(tmp_path, "run", run__max_steps=1, run__tensorboard=tensorboard)
    with pytest.warns(RuntimeWarning, match="empty file"):
        assert main(["pretrain", str(recipe), "--set", f"data.train={tmp_path / 'faces'}"]) == 0
    assert (tmp_path / "run/tb").is_dir() == tensorboard


def test_teacher_moves_and_every_parameter_is_paired(tmp_path: Path) -> None:
    """A few steps at a learning rate that trains (peak 1e-3): every teacher tensor moves by the
    EMA of its student twin, the backbone by a measurable amount, and the loss logs its parts."""
    recipe = _recipe(
        tmp_path,
        "moves",
        run__max_steps=4,
        optim__lr=0.064,  # x batch 4 / 256 = 1e-3
        optim__warmup_epochs=0,
        optim__freeze_last_layer_epochs=0,
        loss__centering="sinkhorn",
        loss__koleo_weight=0.1,
    )
    cfg = load_recipe(recipe)
    torch.manual_seed(cfg.run.seed)
    from lafslib.models import create_model

    initial = create_model(cfg.model.name, **cfg.model.kwargs).state_dict()
    pretrain(cfg)
    state = load_checkpoint(latest_checkpoint(tmp_path / "moves" / "checkpoints"))
    teacher = {k[9:]: v for k, v in state["teacher"].items() if k.startswith("backbone.")}
    trained = {
        k
        for k, v in state["student"].items()
        if k.startswith("backbone.") and v.is_floating_point()
    }
    moved = {
        k: float((teacher[k] - initial[k]).norm() / (initial[k].norm() + 1e-12))
        for k in initial
        if f"backbone.{k}" in trained and not k.startswith("head.")  # head: unused by SSL
    }
    # same initial weights as the run (its embedding head gets no gradient and stays put) ...
    for k in (k for k in initial if k.startswith("head.") and initial[k].is_floating_point()):
        torch.testing.assert_close(teacher[k], initial[k])
    # ... and every tensor that the SSL loss trains has moved
    assert all(m > 0 for m in moved.values()), [k for k, m in moved.items() if m == 0]
    total = sum(float((teacher[k] - initial[k]).norm() ** 2) for k in moved) ** 0.5
    assert total / sum(float(initial[k].norm() ** 2) for k in moved) ** 0.5 > 1e-4
    rows = [yaml.safe_load(r) for r in (tmp_path / "moves/metrics.jsonl").read_text().splitlines()]
    assert {"train/dino_loss", "train/koleo", "train/cpu_minutes"} <= set(rows[-1])


def test_frozen_parameters_keep_their_initial_values(tmp_path: Path) -> None:
    """optim.frozen: the named backbone parameters stay as initialised in student and teacher
    while the rest trains; a name that matches nothing fails with the key and the value."""
    recipe = _recipe(
        tmp_path,
        "frozen",
        run__max_steps=3,
        optim__lr=0.064,
        optim__warmup_epochs=0,
        optim__frozen=["patch_embed", "blocks.0.attn"],
    )
    cfg = load_recipe(recipe)
    torch.manual_seed(cfg.run.seed)
    from lafslib.models import create_model

    initial = create_model(cfg.model.name, **cfg.model.kwargs).state_dict()
    pretrain(cfg)
    state = load_checkpoint(latest_checkpoint(tmp_path / "frozen" / "checkpoints"))
    frozen = [k for k in initial if k.startswith(("patch_embed.", "blocks.0.attn."))]
    assert len(frozen) >= 4
    for net in ("student", "teacher"):
        for k in frozen:
            torch.testing.assert_close(state[net][f"backbone.{k}"], initial[k], rtol=0, atol=1e-6)
        for k in ("blocks.0.mlp.0.weight", "blocks.1.attn.qkv.weight"):
            assert not torch.allclose(state[net][f"backbone.{k}"], initial[k]), (net, k)
    bad = load_recipe(_recipe(tmp_path, "badfrozen", run__max_steps=1, optim__frozen=["patch"]))
    with pytest.raises(ConfigError, match=r"optim.frozen: 'patch' names no parameter"):
        pretrain(bad)


def test_cpu_budget_stops_the_run(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "budget", run__max_cpu_minutes=1e-6, optim__epochs=5)
    run = pretrain(load_recipe(recipe))
    rows = [yaml.safe_load(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    # the budget is checked at the first log step (log_every 1) and ends the run there
    assert [r["step"] for r in rows] == [1] and rows[0]["train/cpu_minutes"] > 0
    assert latest_checkpoint(run / "checkpoints").name == "step_00000001.pt"


class _StepClock:
    """15 CPU seconds per optimizer step, whatever the host (patched into pretraining)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps = 0
        real_update = TeacherEMA.update

        def counting_update(ema, momentum):
            self.steps += 1
            return real_update(ema, momentum)

        monkeypatch.setattr(TeacherEMA, "update", counting_update)
        monkeypatch.setattr("lafslib.engine.cputime.cpu_seconds", lambda: 15.0 * self.steps)


@pytest.mark.parametrize("follow", [False, True])
def test_schedule_follows_the_cpu_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, follow: bool
) -> None:
    """8 scheduled steps, a budget of 4 (1 CPU minute at 15 s a step): following the budget,
    the schedule position is ceil(share used x 8) and reaches its end when the budget does."""
    _StepClock(monkeypatch)
    over = {"run__max_cpu_minutes": 1.0, "run__schedule_by_budget": follow, "optim__epochs": 2}
    run = pretrain(load_recipe(_recipe(tmp_path, "follow", **over)))
    rows = [yaml.safe_load(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # the budget ends the run at step 4 of 8
    assert [r["train/schedule_step"] for r in rows] == ([0, 2, 4, 6] if follow else [0, 1, 2, 3])
    assert rows[-1]["train/cpu_minutes"] == pytest.approx(1.0)
    cfg = load_recipe(_recipe(tmp_path, "follow", **over))
    peak = cfg.optim.lr * cfg.data.batch_size / 256
    for r in rows:
        expected = warmup_cosine(r["train/schedule_step"], 8, 4, peak, cfg.optim.min_lr)
        assert r["train/lr"] == pytest.approx(expected, rel=1e-12)


def test_budget_counts_the_cpu_time_before_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _StepClock(monkeypatch)
    over = {"run__max_cpu_minutes": 1.0, "optim__epochs": 2}
    pretrain(load_recipe(_recipe(tmp_path, "carry", run__max_steps=3, **over)))
    run = pretrain(load_recipe(_recipe(tmp_path, "carry", **over)), resume="auto")
    rows = [yaml.safe_load(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    # 3 steps (45 s) before the resume, 1 after: the budget of 60 s ends the run at step 4
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train/cpu_minutes"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="set run.max_cpu_minutes"):
        load_recipe(_recipe(tmp_path, "nobudget", run__schedule_by_budget=True))


@pytest.mark.parametrize("freeze", [1, 0])
def test_freeze_last_layer_during_the_first_epochs(tmp_path: Path, freeze: int) -> None:
    """DINO's freeze_last_layer: in the first epochs the head's last layer gets no update, so
    student and teacher (its EMA) keep the same prototypes while the rest of the head trains."""
    recipe = _recipe(
        tmp_path,
        f"freeze{freeze}",
        run__max_steps=2,
        optim__lr=0.064,
        optim__warmup_epochs=0,
        optim__freeze_last_layer_epochs=freeze,
    )
    pretrain(load_recipe(recipe))
    state = load_checkpoint(latest_checkpoint(tmp_path / f"freeze{freeze}" / "checkpoints"))
    last = "head.last_layer.parametrizations.weight.original1"
    mlp = "head.mlp.0.weight"
    assert not torch.equal(state["student"][mlp], state["teacher"][mlp])
    gap = (state["student"][last] - state["teacher"][last]).abs().max()
    assert gap < 1e-6 if freeze else gap > 1e-5  # EMA of equal tensors: rounding only


@pytest.mark.parametrize("layout", ["grid", "mosaic"])
def test_flatten_feature_with_local_views_needs_the_grid_layout(
    tmp_path: Path, layout: str
) -> None:
    """ssl_pool flatten learns from local views only when they keep the global token grid."""
    recipe = _recipe(
        tmp_path,
        layout,
        run__max_steps=2,
        model__kwargs={"ssl_pool": "flatten"},
        views__kind="lafs",
        views__local_layout=layout,
        views__local_landmarks=9,
    )
    if layout == "mosaic":
        with pytest.raises(ConfigError, match="local_layout: grid"):
            pretrain(load_recipe(recipe))
        return
    run = pretrain(load_recipe(recipe))
    rows = [yaml.safe_load(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and np.isfinite(rows[-1]["train/loss"])


def test_monitor_logs_the_whitened_accuracy_of_lafs_eval_whiten(
    tmp_path: Path, faces_mini: Path
) -> None:
    """eval.whiten: the monitor's whitened accuracy is what ``lafs eval --whiten`` gives the
    exported teacher on the same seeded subset of the folder."""
    from lafslib.evaluation.verification import evaluate_bin
    from lafslib.evaluation.whitening import fit_whitening

    folder, bin_path = faces_mini / "identities", faces_mini / "lfw_mini.bin"
    recipe = _recipe(
        tmp_path,
        "white",
        run__max_steps=1,
        eval__bins=[str(bin_path)],
        eval__every=1,
        eval__whiten=str(folder),
        eval__whiten_images=80,
    )
    cfg = load_recipe(recipe)
    run = pretrain(cfg)
    (row,) = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()
              if "eval/lfw_mini/whitened_accuracy" in r]  # fmt: skip
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    teacher = load_export(tmp_path / "export")
    white, info = fit_whitening(teacher, folder, max_images=80, seed=cfg.run.seed)
    assert info["images"] == 80
    expected = evaluate_bin(white, bin_path)
    assert row["eval/lfw_mini/whitened_accuracy"] == pytest.approx(expected["accuracy"])
    assert row["eval/lfw_mini/accuracy"] == pytest.approx(
        evaluate_bin(teacher, bin_path)["accuracy"]
    )


def test_a_bad_whitening_folder_fails_before_the_first_step(tmp_path: Path) -> None:
    common = {"run__max_steps": 1, "eval__bins": ["x.bin"], "eval__every": 1}
    missing = _recipe(tmp_path, "missing", eval__whiten=str(tmp_path / "none"), **common)
    with pytest.raises(FileNotFoundError, match="eval.whiten: folder not found"):
        pretrain(load_recipe(missing))
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.jpg").write_bytes(b"")
    small = _recipe(tmp_path, "small", eval__whiten=str(few), **common)
    with pytest.raises(ConfigError, match="1 faces cannot whiten the 64-dimensional"):
        pretrain(load_recipe(small))
    for name in ("missing", "small"):
        assert not (tmp_path / name / "checkpoints").exists() or not any(
            (tmp_path / name / "checkpoints").iterdir()
        )
