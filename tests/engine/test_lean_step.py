"""The lean pretraining step: foreach clipping, one fused EMA pass, the DINO head once per
network and step, the embedding head out of pretraining, DINO's position-embedding
interpolation as a model option."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from lafslib.config import load_recipe
from lafslib.engine.clipping import clip_gradients
from lafslib.engine.ema import TeacherEMA
from lafslib.engine.param_groups import param_groups
from lafslib.engine.pretrain import PretrainTask, pretrain
from lafslib.engine.ssl_network import SSLNetwork
from lafslib.models import DINOHead, create_model

ROOT = Path(__file__).resolve().parents[2]


def test_foreach_clipping_equals_dinos_per_parameter_loop() -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (3, 50, 7, 400)]
    for p, scale in zip(params, (0.1, 10.0, 1.0, 100.0)):
        p.grad = torch.randn_like(p) * scale
    params.append(torch.nn.Parameter(torch.ones(2)))  # no gradient: untouched
    expected = []
    for p in params[:4]:
        norm = p.grad.norm(2)
        expected.append(p.grad * torch.clamp(3.0 / (norm + 1e-6), max=1.0))
    clip_gradients(params, 3.0)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-6, atol=1e-7)
    assert params[0].grad.norm() < 3.0 and params[3].grad.norm() == pytest.approx(3.0, rel=1e-5)
    assert params[4].grad is None


def test_ema_pairs_once_skips_untrained_parameters_and_steps_in_one_lerp() -> None:
    student = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    teacher = copy.deepcopy(student)
    student[1].weight.requires_grad_(False)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = {n: t.clone() for n, t in teacher.named_parameters()}
    ema = TeacherEMA(teacher, student)
    assert len(ema.teacher) == 3
    ema.update(0.9)
    for (name, t), s in zip(teacher.named_parameters(), student.parameters()):
        if name == "1.weight":
            assert torch.equal(t, before[name])  # never trained: not part of the EMA
        else:
            torch.testing.assert_close(t, 0.9 * before[name] + 0.1 * s.detach())
    with pytest.raises(ValueError, match="differ at 1.bias"):
        TeacherEMA(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 5)), student)


def test_the_dino_head_builds_its_normalised_weight_once_per_network_call() -> None:
    torch.manual_seed(0)
    backbone = create_model("vit_test")
    net = SSLNetwork(backbone, DINOHead(backbone.ssl_dim, 32, 16, 8), mosaic_views=False)
    calls = []
    net.head.last_layer.parametrizations.weight.register_forward_hook(lambda *a: calls.append(1))
    views = [
        {"image": torch.rand(2, 3, 112, 112), "is_global": True},
        {"image": torch.rand(2, 3, 112, 112), "is_global": True},
        {"image": torch.rand(2, 3, 48, 48), "is_global": False},
    ]
    outputs, feats = net(views, return_features=True)
    assert len(calls) == 1 and [o.shape for o in outputs] == [(2, 32)] * 3
    for view, out, feat in zip(views, outputs, feats):  # each view's rows, in view order
        torch.testing.assert_close(out, net.head(feat), rtol=1e-5, atol=1e-6)
        one = backbone.forward_ssl(view["image"])
        torch.testing.assert_close(feat, one, rtol=1e-5, atol=1e-5)


def _recipe(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "recipes/demo/pretrain_demo.yaml").read_text())
    data["run"].update({"output_dir": str(tmp_path / "run"), "max_steps": 2, "tensorboard": False})
    data["data"].update({"batch_size": 4, "synthetic_identities": 4, "synthetic_per_identity": 4})
    data["head"]["out_dim"] = 64
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _pretrained_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PretrainTask:
    """The task of a short pretraining run on the test recipe, after the run."""
    tasks = []
    real = PretrainTask.build
    monkeypatch.setattr(
        PretrainTask, "build", lambda self, ctx: tasks.append(self) or real(self, ctx)
    )
    pretrain(load_recipe(_recipe(tmp_path)))
    (task,) = tasks
    return task


def test_the_embedding_head_is_out_of_pretrainings_optimizer_and_ema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = _pretrained_task(tmp_path, monkeypatch)
    head = {n for n, _ in task.student.named_parameters() if n.startswith("backbone.head.")}
    assert head and task.unused == head
    in_optimizer = {id(p) for g in task.optimizer.param_groups for p in g["params"]}
    names = {id(p): n for n, p in task.student.named_parameters()}
    assert not {names[i] for i in in_optimizer} & head
    assert not {id(p) for p in task.ema.student} & {
        id(p) for n, p in task.student.named_parameters() if n in head
    }
    trained = [n for n, p in task.student.named_parameters() if p.requires_grad]
    assert (
        len(task.ema.student)
        == len(trained)
        == sum(len(g["params"]) for g in task.optimizer.param_groups)
    )


def test_an_optimizer_state_that_still_holds_the_embedding_head_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint of the previous layout (the head in the optimizer, never stepped) resumes."""
    task = _pretrained_task(tmp_path, monkeypatch)
    old = torch.optim.AdamW(param_groups(task.student, task.skip, include=task.unused), lr=0.1)
    for p in task.student.parameters():
        p.grad = None if p.requires_grad is False else torch.ones_like(p)
    old.step()
    state = old.state_dict()
    assert sum(len(g["params"]) for g in state["param_groups"]) > sum(
        len(g["params"]) for g in task.optimizer.param_groups
    )
    task.optimizer.load_state_dict(task.optimizer_state(state))
    for group in task.optimizer.param_groups:
        for p in group["params"]:
            assert task.optimizer.state[p]["step"] == 1  # every trained parameter kept its moments


def _bicubic_1d(values: list[float], src: float, a: float = -0.75) -> float:
    """Cubic convolution (Keys, a = -0.75 as torch) of ``values`` at coordinate ``src``, the
    borders clamped."""
    base = int(src // 1)
    t = src - base
    total = 0.0
    for k in range(-1, 3):
        x = abs(t - k)
        w = ((a + 2) * x - (a + 3)) * x * x + 1 if x <= 1 else a * (((x - 5) * x + 8) * x - 4)
        total += w * values[min(max(base + k, 0), len(values) - 1)]
    return total


def test_dino_position_interpolation_samples_with_the_0_1_offset() -> None:
    """Resampling 14x14 position embeddings to 6x6: output column j samples the source at
    (j + 0.5) * G / s - 0.5, with s = g + 0.1 for DINO's interpolation and s = g for the exact
    one (checked against a cubic convolution written out here, on values varying along x)."""
    grid, small = 14, 6
    models = {k: create_model("vit_test", pos_interp=k) for k in ("exact", "dino")}
    row = [float((x * 7) % 5) + 0.3 * x for x in range(grid)]  # any values along x
    for m in models.values():
        with torch.no_grad():
            m.pos_embed[0, 1:] = torch.tensor(row * grid)[:, None]
            m.pos_embed[0, 0] = -1.0
    for kind, s in (("exact", small), ("dino", small + 0.1)):
        with torch.no_grad():
            pe = models[kind]._pos_embed(small)
        assert pe.shape == (1, 1 + small * small, models[kind].dim)
        assert torch.all(pe[0, 0] == -1.0)  # the CLS position is kept as is
        got = pe[0, 1:, 0].reshape(small, small)
        expected = [_bicubic_1d(row, (j + 0.5) * grid / s - 0.5) for j in range(small)]
        for y in range(small):
            torch.testing.assert_close(got[y], torch.tensor(expected), rtol=0, atol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(
            models["exact"]._pos_embed(small), models["dino"]._pos_embed(small)
        )
    for m in models.values():  # the training grid is never resampled
        assert m._pos_embed(grid) is m.pos_embed
    with pytest.raises(ValueError, match="pos_interp must be"):
        create_model("vit_test", pos_interp="bilinear")
