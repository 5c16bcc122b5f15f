"""Finetuning: margin-loss families, adapters, layer-wise LR decay, few-shot subsets, resume."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lafslib.cli import main
from lafslib.config import ConfigError, load_recipe
from lafslib.engine.checkpoint import load_checkpoint
from lafslib.engine.export import export_run
from lafslib.engine.finetune import (
    _apply_adapter,
    few_shot_indices,
    finetune,
    mixup_batch,
    mixup_margin_loss,
)
from lafslib.engine.param_groups import param_groups_layer_decay
from lafslib.layers import LoRALinear, apply_lora, merge_lora
from lafslib.losses import CombinedMarginLoss, PartialFC
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
    with pytest.raises(ValueError, match="LoRA targets"):
        finetune(_recipe(tmp_path, "lora", ["adapter.mode=lora", "adapter.lora_targets=[x]"]))
    with pytest.raises(ConfigError, match="loss.name"):
        _recipe(tmp_path, "bad", ["loss.name=sphereface"])


def test_rslora_adapter_config(tmp_path: Path) -> None:
    cfg = _recipe(tmp_path, "rs", ["adapter.mode=rslora", "adapter.lora_targets=[q, k, v]"])
    model = create_model("vit_test")
    _apply_adapter(model, cfg)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(layers) == 2 and all(m.adapt == (0, 1, 2) for m in layers)
    assert layers[0].scale == cfg.adapter.lora_alpha / math.sqrt(cfg.adapter.lora_rank)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"blocks", "head"}


def test_lora_finetune_exports_merged_model(tmp_path: Path) -> None:
    mode = "lora"
    base = create_model("vit_test")
    save_export(base, tmp_path / "init")
    sets = [f"adapter.mode={mode}", "adapter.lora_rank=4", "adapter.lora_alpha=8",
            "optim.head_lr=0.01", "optim.head_weight_decay=0", "run.max_steps=3",
            f"init={tmp_path / 'init'}"]  # fmt: skip
    run = finetune(_recipe(tmp_path, mode, sets))
    # The checkpoint holds the unmerged LoRA model; rebuild it and merge by hand.
    state = load_checkpoint(run / "checkpoints/step_00000003.pt")
    model = create_model("vit_test")
    names = apply_lora(model, r=4, alpha=8, targets=("q", "v"), rs=mode == "rslora")
    model.load_state_dict({k[len("backbone.") :]: v for k, v in state["model"].items()})
    lora = model.get_submodule(names[0])
    assert isinstance(lora, LoRALinear) and lora.lora_B.abs().sum() > 0  # it trained
    x = torch.randn(3, 3, 112, 112)
    unmerged = model.eval()(x)
    exported = load_export(run / "export")  # a plain model: strict load, no LoRA keys
    assert not any(isinstance(m, LoRALinear) for m in exported.modules())
    torch.testing.assert_close(exported(x), unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(exported(x), merge_lora(copy.deepcopy(model))(x))
    # Frozen: everything but the head and the adapted projections, and the fused key rows.
    sd, sd0 = exported.state_dict(), base.state_dict()
    for name, tensor in sd0.items():
        if not name.startswith("head.") and not any(name.startswith(n + ".") for n in names):
            torch.testing.assert_close(sd[name], tensor, atol=0, rtol=0, msg=name)
    w, w0 = sd[names[0] + ".weight"], sd0[names[0] + ".weight"]
    inner = w.shape[0] // 3
    torch.testing.assert_close(w[inner : 2 * inner], w0[inner : 2 * inner], atol=0, rtol=0)
    assert not torch.equal(w[:inner], w0[:inner])
    assert not torch.equal(sd["head.0.weight"], sd0["head.0.weight"])
    assert json.loads((run / "export/model.json").read_text())["name"] == "vit_test"
    # `lafs export RUN` rebuilds the adapter from the checkpoint and merges it the same way
    again = load_export(export_run(run, tmp_path / "re_export"))
    torch.testing.assert_close(again(x), exported(x), atol=1e-6, rtol=1e-6)


def test_mixup_batch_pairs_and_identity() -> None:
    x = torch.randn(6, 3, 4, 4)
    y = torch.arange(6)  # label i is image i, so labels_b names the partner image
    kp = torch.rand(6, 5, 2)
    mx, mkp, ya, yb, lam = mixup_batch(x, y, kp, 0.2, 1.0, np.random.default_rng(0))
    assert 0 < lam < 1 and torch.equal(ya, y) and not torch.equal(yb, y)
    assert sorted(yb.tolist()) == y.tolist()
    torch.testing.assert_close(mx, lam * x + (1 - lam) * x[yb])
    torch.testing.assert_close(mkp, lam * kp + (1 - lam) * kp[yb])
    for alpha, prob in ((0.2, 0.0), (0.0, 1.0)):
        out = mixup_batch(x, y, kp, alpha, prob, np.random.default_rng(0))
        assert out[0] is x and out[1] is kp and torch.equal(out[3], y) and out[4] == 1.0
    hits = sum(mixup_batch(x, y, kp, 0.2, 0.1, np.random.default_rng(i))[4] < 1 for i in range(400))
    assert 20 <= hits <= 65  # about 10% of batches


def test_mixup_margin_loss_applies_the_margin_per_target() -> None:
    torch.manual_seed(0)
    s, m = 16.0, 0.5
    clf = PartialFC(CombinedMarginLoss(s, 1.0, m, 0.0), 8, 5)
    emb, ya, yb, lam = (
        torch.randn(4, 8),
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([4, 2, 1, 0]),
        0.7,
    )

    def arcface_ce(labels: torch.Tensor) -> torch.Tensor:
        cos = torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(clf.weight).T
        logits = s * cos
        rows = torch.arange(len(labels))
        logits[rows, labels] = s * torch.cos(torch.acos(cos[rows, labels]) + m)
        return torch.logsumexp(logits, 1) - logits[rows, labels]

    with torch.no_grad():
        mixed = mixup_margin_loss(clf, emb, ya, yb, lam)
        plain = mixup_margin_loss(clf, emb, ya, ya, 1.0)
    expected = lam * arcface_ce(ya) + (1 - lam) * arcface_ce(yb)
    torch.testing.assert_close(mixed, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(plain, arcface_ce(ya), atol=1e-4, rtol=1e-5)
    assert not torch.allclose(mixed, plain)


def test_mixup_in_finetune(tmp_path: Path) -> None:
    def first_loss(name: str, sets: list[str]) -> float:
        run = finetune(_recipe(tmp_path, name, [*sets, "run.max_steps=1"]))
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["train/loss"]

    off = first_loss("off", [])
    assert first_loss("p0", ["optim.mixup_alpha=0.2", "optim.mixup_prob=0"]) == off
    on = first_loss("p1", ["optim.mixup_alpha=0.2", "optim.mixup_prob=1"])
    assert math.isfinite(on) and on != off


@pytest.mark.parametrize(
    "recipe", sorted((ROOT / "recipes" / "finetune").glob("*.yaml")), ids=lambda p: p.stem
)
def test_shipped_finetune_recipes_run_at_tiny_size(recipe: Path, tmp_path: Path) -> None:
    overrides = [
        f"run.output_dir={tmp_path / recipe.stem}",
        "run.max_steps=1",
        "run.precision=fp32",
        "data.train=synthetic",
        "data.landmarks=null",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.synthetic_identities=4",
        "data.synthetic_per_identity=2",
        "model.name=vit_test",
        "model.kwargs={}",
        "eval.bins=[]",
        "init=null",
    ]
    args = ["finetune", str(recipe)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    assert load_export(tmp_path / recipe.stem / "export") is not None


def test_landmark_consistency_keeps_the_landmark_cnn_near_its_start(tmp_path: Path) -> None:
    from lafslib.engine.finetune import landmark_consistency_weight

    cfg = _recipe(tmp_path, "w", ["loss.landmark_consistency=2.0",
                                  "loss.landmark_consistency_epochs=4"])  # fmt: skip
    assert landmark_consistency_weight(cfg, 0.0) == 2.0
    assert landmark_consistency_weight(cfg, 1.0) == 1.5
    assert landmark_consistency_weight(cfg, 5.0) == 0.0
    init = save_export(create_model("part_fvit_test", init_grid=True), tmp_path / "init")
    start = load_export(init).landmark_net.state_dict()

    def drift(weight: float, name: str) -> float:
        sets = ["model.name=part_fvit_test", f"init={init}", "run.max_steps=4",
                "optim.lr=0.05", f"loss.landmark_consistency={weight}"]  # fmt: skip
        run = finetune(_recipe(tmp_path, name, sets))
        end = load_export(run / "export").landmark_net.state_dict()
        return sum(float((end[k] - start[k]).float().norm()) for k in start if "head" in k)

    assert drift(1000.0, "tied") < drift(0.0, "free")
    with pytest.raises(ConfigError, match="landmark CNN"):
        finetune(_recipe(tmp_path, "bad", ["loss.landmark_consistency=1.0"]))


def test_few_shot_subset_replaces_a_bad_image_from_inside_the_subset(
    tmp_path: Path, face_folder
) -> None:
    from lafslib.data import ImageFolderDataset
    from lafslib.engine.finetune import FaceTransform, FewShotSubset
    from lafslib.errors import DataError

    files = face_folder(tmp_path / "faces", identities=2, per_identity=2)
    files[1].write_bytes(b"")  # the last image of identity 0; the next one is identity 1's
    base = ImageFolderDataset(tmp_path / "faces", labelled=True, transform=FaceTransform())
    subset = FewShotSubset(base, [0, 1], {0: 0})
    with pytest.warns(RuntimeWarning, match="empty file"):
        x, y, _, _ = subset[1]
    assert y == 0 and x.shape == (3, 112, 112) and x.dtype == torch.uint8
    with pytest.raises(DataError, match=r"faces \(training subset\): no readable image among 1"):
        FewShotSubset(base, [1], {0: 0})[0]


def test_few_shot_finetune_on_a_folder_with_a_bad_image(tmp_path: Path, face_folder) -> None:
    files = face_folder(tmp_path / "faces", identities=3, per_identity=2)
    files[3].write_bytes(b"\xff\xd8 truncated")  # the next image is of identity 2, left out
    sets = [f"data.train={tmp_path / 'faces'}", "data.max_images=4", "data.batch_size=2",
            "run.max_steps=2", "run.tensorboard=false"]  # fmt: skip
    with pytest.warns(RuntimeWarning):
        run = finetune(_recipe(tmp_path, "few", sets))
    assert (run / "export/model.json").is_file()
