"""Face ViT: registry, shapes for any token grid, interface, export round trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lafslib.models import DINOHead, create_model, list_models, load_export, save_export


@pytest.mark.parametrize("name", ["vit_test", "fvit_test"])
def test_forward_backward_any_grid(name: str) -> None:
    m = create_model(name)
    x = torch.randn(2, 3, 112, 112, requires_grad=True)
    emb = m(x)
    assert emb.shape == (2, m.embed_dim)
    emb.sum().backward()
    assert x.grad is not None and m.pos_embed.grad is not None
    assert m.forward_ssl(torch.randn(2, 3, 48, 48)).shape == (2, m.ssl_dim)
    assert m.forward_features(torch.randn(1, 3, 112, 112)).shape == (1, 197, m.dim)


def test_registry_and_big_models_build_on_meta() -> None:
    names = list_models("*vit*")
    assert {"vit_test", "vit_small", "fvit_base"} <= set(names)
    with torch.device("meta"):
        m = create_model("fvit_base")
    assert m.blocks[0].attn.num_heads == 11 and m.blocks[0].attn.head_dim == 64
    assert abs(m.blocks[0].attn.scale - 768**-0.5) < 1e-12
    with pytest.raises(KeyError, match="unknown model"):
        create_model("vit_nope")


def test_fused_and_manual_attention_agree() -> None:
    m = create_model("vit_test").eval()
    x = torch.randn(2, 3, 112, 112)
    fused = m(x)
    for blk in m.blocks:
        blk.attn.fused_attn = False
    torch.testing.assert_close(m(x), fused, atol=1e-5, rtol=1e-5)


def test_group_matcher_and_no_weight_decay() -> None:
    m = create_model("vit_test")
    assert m.no_weight_decay() == {"pos_embed", "cls_token"}
    assert "blocks" in m.group_matcher()


def test_export_roundtrip(tmp_path: Path) -> None:
    m = create_model("vit_test", drop_path=0.1).eval()
    save_export(m, tmp_path / "exp")
    again = load_export(tmp_path / "exp")
    x = torch.randn(3, 3, 112, 112)
    torch.testing.assert_close(again(x), m(x))  # ONNX: tests/engine/test_export.py


def test_dino_head_weight_norm_frozen() -> None:
    head = DINOHead(32, out_dim=100, hidden_dim=64, bottleneck_dim=16)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    w = head.last_layer.weight
    torch.testing.assert_close(w.norm(dim=1), torch.ones(100))
    assert head(torch.randn(4, 32)).shape == (4, 100)


def test_flatten_pool_keeps_the_layout() -> None:
    """``ssl_pool="flatten"``: a linear map of the tokens in grid order, so swapping two patches
    changes the feature (the CLS feature of a fresh ViT barely sees the layout); only the full
    grid is accepted, and the map trains with the head group."""
    torch.manual_seed(0)
    model = create_model("vit_test", ssl_pool="flatten").eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    swapped = x.clone()
    swapped[..., :8, :8], swapped[..., :8, 8:16] = x[..., :8, 8:16], x[..., :8, :8]
    with torch.no_grad():
        f = model.forward_ssl(x)
        assert f.shape == (2, model.ssl_dim) and model(x).shape == (2, model.embed_dim)
        tokens = model.forward_features(x)[:, 1:].flatten(1)
        torch.testing.assert_close(f, model.flatten_pool(tokens))
        assert not torch.allclose(model.forward_ssl(swapped), f, atol=1e-4)
    with pytest.raises(ValueError, match="full 14x14 token grid"):
        model.forward_ssl(torch.zeros(1, 3, 48, 48))
    assert re.match(model.group_matcher()["head"], "flatten_pool.weight")
    with pytest.raises(ValueError, match="ssl_pool"):
        create_model("vit_test", ssl_pool="mean")
