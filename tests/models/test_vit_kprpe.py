"""ViTs with KP-RPE: zero init equals the plain ViT, CVLFace parity, token centres, registry."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lafslib.layers.kprpe import kprpe_grid_centers
from lafslib.models import create_model, list_models, model_info
from lafslib.models.convert import convert_checkpoint

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def golden_state(name: str) -> dict[str, torch.Tensor]:
    """Reference weights by the rule of tests/data/golden/README.md (keyed by CVLFace names)."""
    state = {}
    for key, shape in json.loads((GOLDEN / f"{name}_keys.json").read_text()).items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) * 0.5 + 0.75
        elif len(shape) >= 2:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, atol=1e-4 * scale, rtol=1e-4)


KPRPE_MODELS = ["vit_test_kprpe", "cvlface_vit_test_kprpe"]


@pytest.mark.parametrize("name", KPRPE_MODELS)
def test_zero_init_kprpe_equals_the_plain_vit(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    plain = create_model(name.removesuffix("_kprpe")).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"kprpe.linear.weight", "kprpe.linear.bias"}
    x, kp = torch.randn(2, 3, 112, 112), torch.rand(2, 5, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, kp), plain(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs keypoints"):
        model(x)


@pytest.mark.parametrize("name", KPRPE_MODELS)
def test_fused_and_manual_paths_agree_and_token_centers_reduce_to_grid(name: str) -> None:
    torch.manual_seed(1)
    model = create_model(name).eval()
    torch.nn.init.normal_(model.kprpe.linear.weight, std=3.0)
    x, kp = torch.randn(2, 3, 112, 112), torch.rand(2, 5, 2)
    with torch.no_grad():
        fused = model(x, kp)
        centers = kprpe_grid_centers(14, 14).expand(2, -1, -1)
        torch.testing.assert_close(model(x, kp, token_centers=centers), fused)
        assert (model(x, torch.rand(2, 5, 2)) - fused).abs().max() > 1e-4  # the bias is active
        for blk in model.blocks:
            blk.attn.fused_attn = False
        torch.testing.assert_close(model(x, kp), fused, atol=1e-5, rtol=1e-5)


def test_every_new_model_builds_and_trains_at_tiny_size() -> None:
    names = ["vit_test_kprpe", "cvlface_vit_test", "cvlface_vit_test_kprpe"]
    assert {*names, "vit_small_kprpe", "vit_base_kprpe"} <= set(list_models("*"))
    assert {"cvlface_vit_small_kprpe", "cvlface_vit_base_kprpe"} <= set(list_models("cvlface*"))
    for name in names:
        model = create_model(name)
        assert model_info(model).needs_keypoints == name.endswith("_kprpe")
        x = torch.randn(2, 3, 112, 112, requires_grad=True)
        model(x, torch.rand(2, 5, 2)).square().sum().backward()
        assert x.grad is not None and model.pos_embed.grad is not None
        if model.kprpe is not None:
            assert model.kprpe.linear.weight.grad.abs().sum() > 0
        if name == "vit_test_kprpe":
            model.set_grad_checkpointing()
            model(x, torch.rand(2, 5, 2)).sum().backward()
        assert model.forward_ssl(torch.randn(2, 3, 48, 48), torch.rand(2, 5, 2)).shape == (
            2,
            model.ssl_dim,
        )


@pytest.mark.parametrize(
    "name,geometry",
    [
        ("cvlface_vit_small", (12, 8, 2560)),
        ("cvlface_vit_base_kprpe", (24, 16, 1536)),
        ("vit_base_kprpe", (12, 12, 3072)),
    ],
)
def test_big_geometries_on_meta(name: str, geometry: tuple[int, int, int]) -> None:
    with torch.device("meta"):
        model = create_model(name)
    depth, heads, hidden = geometry
    assert len(model.blocks) == depth and model.blocks[0].attn.num_heads == heads
    fc1 = model.blocks[0].mlp.fc1 if hasattr(model.blocks[0].mlp, "fc1") else model.blocks[0].mlp[0]
    assert fc1.out_features == hidden
    if name.startswith("cvlface"):
        assert model.feature[0].in_features == 512 * 196 and model.blocks[0].attn.qkv.bias is None
    if name.endswith("_kprpe"):
        assert model.kprpe.linear.out_features == 49 * heads * depth


@pytest.mark.parametrize(
    "golden,name", [("cvlface_vit_tiny", "cvlface_vit_test"), ("cvlface_vit_kprpe_tiny", "")]
)
def test_cvlface_checkpoints_reproduce_reference_outputs(tmp_path, golden: str, name: str) -> None:
    name = name or "cvlface_vit_test_kprpe"
    ref = load_file(str(GOLDEN / f"{golden}.safetensors"))
    state = golden_state(golden)
    torch.save({f"net.{k}": v for k, v in state.items()}, tmp_path / "model.pt")
    model, report, _ = convert_checkpoint(tmp_path, "cvlface", model_name=name)
    assert report.ok and len(report.loaded) == len(state)
    with torch.no_grad():
        features = model.forward_features(ref["input"], ref["keypoints"]).flatten(1)
        _close(features, ref["features"])
        _close(model(ref["input"], ref["keypoints"]), ref["output"])
        if model.kprpe is not None:  # the golden KP-RPE weights matter
            model.kprpe.reset_parameters()
            assert (model(ref["input"], ref["keypoints"]) - ref["output"]).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["vit_test_kprpe", "cvlface_vit_test_kprpe"])
def test_grad_checkpointing_gives_the_same_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, drop_path=0.0)
    x, kp = torch.randn(2, 3, 112, 112), torch.rand(2, 5, 2)
    grads = []
    for checkpointed in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(checkpointed)
        model(x, kp).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("kprpe" in n for n in grads[0])
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-6, msg=n)


def test_export_traces_the_bucket_index_without_caching_fake_tensors() -> None:
    from lafslib.layers.kprpe import _grid_bucket_ids_cpu

    _grid_bucket_ids_cpu.cache_clear()
    model = create_model("vit_test_kprpe").eval()
    torch.nn.init.normal_(model.kprpe.linear.weight)
    x, kp = torch.randn(2, 3, 112, 112), torch.rand(2, 5, 2)
    program = torch.export.export(model, (x, kp))  # cold caches: the index ops are traced
    assert not model.kprpe._index_cache and _grid_bucket_ids_cpu.cache_info().currsize == 0
    with torch.no_grad():
        expected = model(x, kp)  # eager, now caching real tensors
        torch.testing.assert_close(program.module()(x, kp), expected)
    assert type(model.kprpe._index_cache[(14, 14, torch.device("cpu"))]) is torch.Tensor
