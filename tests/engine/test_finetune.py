"""Finetuning: margin-loss families, adapters, layer-wise LR decay, few-shot subsets, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lafslib.cli import main
from lafslib.config import ConfigError, load_recipe
from lafslib.engine.checkpoint import load_checkpoint
from lafslib.engine.finetune import few_shot_indices, finetune
from lafslib.engine.param_groups import param_groups_layer_decay
from lafslib.models import create_model, load_export, save_export

ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, name: str, sets: list[str]) -> Path:
    data = yaml.safe_load((ROOT / "recipes/demo/finetune_demo.yaml").read_text())
    data["run"].update({"output_dir": str(tmp_path / name), "checkpoint_every": 2, "log_every": 1})
    data["data"].update({"batch_size": 8, "synthetic_identities": 4, "synthetic_per_identity": 4})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path, sets)


@pytest.mark.parametrize(
    "sets",
    [
        ["loss.name=arcface", "loss.partial_fc_rate=0.5"],
        ["loss.name=cosface", "loss.m3=0.35", "adapter.mode=linear"],
        [
            "loss.name=adaface",
            "model.name=iresnet_test",
            "optim.name=sgd",
            "optim.schedule=step",
            "optim.milestones=[1]",
        ],
        [
            "loss.name=frabsm",
            "loss.mining_alpha=0.5",
            "adapter.mode=partial",
            "adapter.partial_from_block=1",
        ],
    ],
    ids=["arcface", "cosface-linear", "adaface-iresnet", "frabsm-partial"],
)
def test_loss_families_smoke(tmp_path: Path, sets: list[str]) -> None:
    cfg = _recipe(tmp_path, "run", [*sets, "run.max_steps=2"])
    run = finetune(cfg)
    model = load_export(run / "export")
    assert model(torch.randn(2, 3, 112, 112)).shape[0] == 2
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "train/loss" in rows[0]


def test_linear_probe_freezes_the_backbone(tmp_path: Path) -> None:
    base = create_model("vit_test")
    save_export(base, tmp_path / "init")
    cfg = _recipe(
        tmp_path, "lin", ["adapter.mode=linear", "run.max_steps=2", f"init={tmp_path / 'init'}"]
    )
    after = load_export(finetune(cfg) / "export")
    torch.testing.assert_close(after.blocks[0].attn.qkv.weight, base.blocks[0].attn.qkv.weight)
    assert not torch.equal(after.head[0].weight, base.head[0].weight)


def test_layer_decay_scales_learning_rates() -> None:
    model = create_model("vit_test")  # 2 blocks: stem 0, blocks 1-2, head 3
    groups = param_groups_layer_decay(
        model, 0.05, layer_decay=0.5, no_weight_decay=model.no_weight_decay()
    )
    scale = {g["layer_id"]: g["lr_scale"] for g in groups}
    assert scale == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}
    names = {n: g for g in groups for n in g["names"]}
    assert (
        names["pos_embed"]["weight_decay"] == 0
        and names["blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    )
    assert names["blocks.1.norm1.weight"]["weight_decay"] == 0


def test_few_shot_subset() -> None:
    labels = [i // 5 for i in range(50)]
    idx, mapping = few_shot_indices(labels, per_identity=2, identity_fraction=0.4, seed=0)
    assert len(mapping) == 4 and len(idx) == 8
    assert sorted({labels[i] for i in idx}) == sorted(mapping)
    assert few_shot_indices(labels, 2, 0.4, 0) == (idx, mapping)


def test_resume_equivalence(tmp_path: Path) -> None:
    finetune(_recipe(tmp_path, "a", ["run.max_steps=4"]))
    finetune(_recipe(tmp_path, "b", ["run.max_steps=2"]))
    finetune(_recipe(tmp_path, "b", ["run.max_steps=4"]), resume="auto")
    a = load_checkpoint(tmp_path / "a/checkpoints/step_00000004.pt")
    b = load_checkpoint(tmp_path / "b/checkpoints/step_00000004.pt")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, atol=0, rtol=0, msg=name)
    torch.testing.assert_close(a["classifier"], b["classifier"], atol=0, rtol=0)


def test_cli_and_unavailable_options(tmp_path: Path) -> None:
    recipe = ROOT / "recipes/demo/finetune_demo.yaml"
    out = tmp_path / "cli"
    assert main(["finetune", str(recipe), "--set", f"run.output_dir={out}", "--set", "run.max_steps=1",
                 "--set", "data.synthetic_identities=4", "--set", "data.batch_size=8"]) == 0  # fmt: skip
    assert (out / "export" / "model.json").is_file()
    with pytest.raises(ValueError, match="LoRA adapters are not available"):
        finetune(_recipe(tmp_path, "lora", ["adapter.mode=lora"]))
    with pytest.raises(ConfigError, match="loss.name"):
        _recipe(tmp_path, "bad", ["loss.name=sphereface"])
