"""Attention maps: manual-path maps per layer, token scores, and `lafs show-attention`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lafslib.cli import main
from lafslib.data.synthetic import render_face
from lafslib.models import create_model, save_export
from lafslib.viz.attention import attention_maps, token_scores


def test_maps_are_the_softmax_of_each_layer() -> None:
    model = create_model("vit_test").eval()
    x = torch.randn(2, 3, 112, 112)
    maps, positions = attention_maps(model, x)
    assert positions is None and len(maps) == len(model.blocks)
    t = 1 + model.grid**2
    assert maps[0].shape == (2, model.blocks[0].attn.num_heads, t, t)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(maps[-1].shape[:-1]))
    with torch.no_grad():  # the maps do not change the output and are released afterwards
        torch.testing.assert_close(model(x), model(x))
    assert all(b.attn.last_attention is None for b in model.blocks)
    # the first layer's map equals an explicit softmax(q k^T * scale) of its input tokens
    blk = model.blocks[0]
    with torch.no_grad():
        tokens = model.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([model.cls_token.expand(2, -1, -1), tokens], 1) + model.pos_embed
        q, k, _ = blk.attn.qkv(blk.norm1(tokens)).chunk(3, dim=-1)
        h = blk.attn.num_heads
        q = q.view(2, t, h, -1).transpose(1, 2)
        k = k.view(2, t, h, -1).transpose(1, 2)
        ref = ((q @ k.transpose(-1, -2)) * blk.attn.scale).softmax(-1)
    torch.testing.assert_close(maps[0], ref, atol=1e-5, rtol=1e-4)
    scores = token_scores(maps[0], 1)
    torch.testing.assert_close(scores, maps[0][:, :, 0, 1:])
    torch.testing.assert_close(token_scores(maps[0], 0), maps[0].mean(2))


@pytest.mark.parametrize("name", ["vit_test_kprpe", "part_fvit_test"])
def test_show_attention_cli(name: str, tmp_path: Path, capsys) -> None:
    export = save_export(create_model(name).eval(), tmp_path / "export")
    face = tmp_path / "face.png"
    Image.fromarray(render_face(1, 0)["image"]).save(face)
    out = tmp_path / "attention.png"
    code = main(
        ["show-attention", str(export), str(face), "--out", str(out), "--layers", "0", "-1"]
    )
    assert code == 0 and out.is_file()
    picture = np.asarray(Image.open(out))
    assert picture.shape[0] > 100 and picture.std() > 5
    assert main(["show-attention", str(export), str(face), "--layers", "99"]) == 2
    assert "out of range" in capsys.readouterr().err
