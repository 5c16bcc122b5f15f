"""ONNX export of every registered model family, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lafslib.cli import main
from lafslib.config import config_to_dict, load_recipe
from lafslib.engine.checkpoint import save_checkpoint
from lafslib.engine.export import export_onnx, onnx_signature
from lafslib.layers import KPRPE
from lafslib.models import create_model, load_export

ROOT = Path(__file__).resolve().parents[2]

FAMILIES = {
    "face_vit": ("vit_test", {}),
    "face_vit_kprpe": ("vit_test_kprpe", {}),
    "cvlface_vit": ("cvlface_vit_test", {}),
    "cvlface_vit_kprpe": ("cvlface_vit_test_kprpe", {}),
    "part_fvit": ("part_fvit_test", {}),
    "part_fvit_kprpe": ("part_fvit_test", {"vit_kwargs": {"kprpe": True}}),  # landmark tokens
    "iresnet": ("iresnet_test", {}),
    "mobilefacenet_imagenet_input": (
        "mobilefacenet_test",
        {"input_mean": [0.485, 0.456, 0.406], "input_std": [0.229, 0.224, 0.225]},
    ),
    "timm_vit": ("timm_vit", {"timm_name": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}}),
}


def _nonzero_kprpe(model: nn.Module) -> int:
    """Random KP-RPE weights (they start at zero), so that the keypoints change the output."""
    g = torch.Generator().manual_seed(3)
    found = 0
    for m in model.modules():
        if isinstance(m, KPRPE):
            with torch.no_grad():
                m.linear.weight.copy_(torch.randn(m.linear.weight.shape, generator=g))
                m.linear.bias.copy_(torch.randn(m.linear.bias.shape, generator=g))
            found += 1
    return found


def _inputs(batch: int, needs_keypoints: bool, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"images": torch.rand(batch, 3, 112, 112, generator=g) * 2 - 1}
    if needs_keypoints:
        out["keypoints"] = torch.rand(batch, 5, 2, generator=g)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_equals_pytorch(tmp_path: Path, family: str) -> None:
    name, kwargs = FAMILIES[family]
    model = create_model(name, **kwargs).eval()
    kp = model.pretrained_cfg.needs_keypoints
    assert kp == ("kprpe" in family) and (_nonzero_kprpe(model) > 0) == kp
    path = export_onnx(model, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # one file, no temp
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    signature = onnx_signature(model)
    assert [i.name for i in session.get_inputs()] == (["images", "keypoints"] if kp else ["images"])
    for i in session.get_inputs():
        assert i.shape == signature["inputs"][i.name]  # ["batch", ...]: dynamic batch axis
    for batch, seed in ((1, 10), (4, 11), (4, 12)):  # traced at batch 2
        feeds = _inputs(batch, kp, seed)
        with torch.no_grad():
            expected = model(*feeds.values()).numpy()
        got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        assert got.shape == (batch, signature["outputs"]["embeddings"][1])
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)
    if kp:  # the same images with other keypoints: other embeddings, equal in ONNX too
        feeds["keypoints"] = _inputs(4, kp, 13)["keypoints"]
        with torch.no_grad():
            moved = model(*feeds.values()).numpy()
        got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        np.testing.assert_allclose(got, moved, atol=2e-5, rtol=1e-4)
        assert np.abs(moved - expected).max() > 2e-4  # >> the ONNX error (~1e-7)


def test_lafs_export_onnx_records_inputs(tmp_path: Path) -> None:
    """``lafs export RUN --onnx`` on a KP-RPE run: model.onnx + its inputs in model.json."""
    cfg = load_recipe(ROOT / "recipes/demo/pretrain_demo.yaml", ["model.name=vit_test_kprpe"])
    backbone = create_model("vit_test_kprpe").eval()
    _nonzero_kprpe(backbone)
    state = {
        "teacher": {f"backbone.{k}": v for k, v in backbone.state_dict().items()},
        "step": 7,
        "config": config_to_dict(cfg),
    }
    save_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000007.pt", state)
    assert main(["export", str(tmp_path / "run"), "--onnx"]) == 0
    out = tmp_path / "run" / "export"
    info = json.loads((out / "model.json").read_text())
    assert info["onnx"] == {
        "file": "model.onnx",
        "inputs": {"images": ["batch", 3, 112, 112], "keypoints": ["batch", 5, 2]},
        "outputs": {"embeddings": ["batch", 64]},
    }
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = _inputs(3, True, 0)
    with torch.no_grad():
        expected = load_export(out)(*feeds.values()).numpy()
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)


def test_onnx_mismatch_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("iresnet_test").eval()
    real = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda s, *a: [real(s, *a)[0] + 1e-2])
    with pytest.raises(ValueError, match="ONNX outputs differ"):
        export_onnx(model, tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_an_export_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    """A second ``lafs export`` into the same folder is refused and leaves the first export
    as it was; with ``--overwrite`` it replaces it (here with a later checkpoint)."""
    cfg = load_recipe(ROOT / "recipes/demo/pretrain_demo.yaml", ["model.name=vit_test"])
    backbone = create_model("vit_test").eval()
    for step in (3, 7):
        state = {
            "teacher": {f"backbone.{k}": v for k, v in backbone.state_dict().items()},
            "step": step,
            "config": config_to_dict(cfg),
        }
        save_checkpoint(tmp_path / "run" / "checkpoints" / f"step_{step:08d}.pt", state)
        ckpt = tmp_path / "run" / "checkpoints" / f"step_{step:08d}.pt"
        args = ["export", str(ckpt), "--out", str(tmp_path / "ex")]
        if step == 3:
            assert main(args) == 0
            first = {p.name: p.read_bytes() for p in (tmp_path / "ex").iterdir()}
            continue
        assert main(args) == 2
        assert {p.name: p.read_bytes() for p in (tmp_path / "ex").iterdir()} == first
        assert main([*args, "--overwrite"]) == 0
    assert json.loads((tmp_path / "ex" / "model.json").read_text())["step"] == 7
