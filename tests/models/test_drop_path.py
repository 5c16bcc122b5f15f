"""optim.drop_path: stochastic depth set on built ViTs, used by pretraining and finetuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from timm.layers import DropPath

from lafslib.cli import main
from lafslib.models import create_model, set_drop_path
from lafslib.models.drop_path import drop_path_rates

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vit_test", {}),
        ("part_fvit_test", {}),
        ("timm_vit", {"timm_name": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 3}}),
    ],
)
def test_rates_rise_linearly_over_the_blocks(name: str, kwargs: dict) -> None:
    model = create_model(name, **kwargs)
    n = set_drop_path(model, 0.2)
    rates = drop_path_rates(model)
    assert n == len(rates) >= 2 and rates[0] == 0 and rates[-1] == pytest.approx(0.2)
    assert any(isinstance(m, DropPath) for m in model.modules())
    assert "drop_path" not in model.pretrained_cfg.kwargs  # not carried by exports
    set_drop_path(model, 0.0)
    assert not any(isinstance(m, DropPath) for m in model.modules())


def test_a_model_without_blocks_reports_none() -> None:
    assert set_drop_path(create_model("iresnet_test"), 0.1) == 0


def _first_loss(tmp_path: Path, task: str, name: str, *sets: str) -> float | int:
    recipe = ROOT / f"recipes/demo/{task}_demo.yaml"
    args = [task, str(recipe), "--set", f"run.output_dir={tmp_path / name}"]
    for item in ("run.max_steps=1", "run.tensorboard=false", "data.batch_size=8",
                 "data.synthetic_identities=2", "data.synthetic_per_identity=4", *sets):  # fmt: skip
        args += ["--set", item]
    if task == "pretrain":
        args += ["--set", "views.local_views=2", "--set", "head.out_dim=64"]
    code = main(args)
    if code:
        return code
    return json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])["train/loss"]


@pytest.mark.parametrize("task", ["pretrain", "finetune"])
def test_recipes_drop_path_is_used(tmp_path: Path, task: str) -> None:
    off = _first_loss(tmp_path, task, "off")
    assert _first_loss(tmp_path, task, "zero", "optim.drop_path=0") == off
    assert _first_loss(tmp_path, task, "on", "optim.drop_path=0.5") != off


def test_drop_path_on_a_model_without_blocks_is_a_recipe_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _first_loss(tmp_path, "finetune", "ir", "model.name=iresnet_test", "optim.drop_path=0.1")
    assert code == 2 and "optim.drop_path: iresnet_test" in capsys.readouterr().err
