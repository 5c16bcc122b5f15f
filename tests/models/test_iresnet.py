"""IResNet: insightface key layout, shapes, interface, gradient checkpointing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lafslib.models import create_model, list_models
from lafslib.models.iresnet import IResNet

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def test_iresnet18_state_dict_matches_insightface_layout():
    ref = json.loads((GOLDEN / "insightface_iresnet18_keys.json").read_text())
    ours = {k: list(v.shape) for k, v in IResNet(layers=(2, 2, 2, 2)).state_dict().items()}
    assert ours == ref


@pytest.mark.parametrize(
    ("name", "blocks"),
    [("iresnet18", 8), ("iresnet34", 16), ("iresnet50", 24), ("iresnet100", 49)],
)
def test_registered_depths(name, blocks):
    assert name in list_models("iresnet*")
    model = create_model(name)
    n = sum(len(getattr(model, f"layer{i}")) for i in range(1, 5))
    assert n == blocks
    assert model.fc.in_features == 512 * 49 and model.fc.out_features == 512
    assert model.pretrained_cfg.name == name and model.pretrained_cfg.embed_dim == 512


def test_tiny_forward_backward_and_interface():
    model = create_model("iresnet_test")
    x = torch.randn(3, 3, 112, 112)
    emb = model(x)
    assert emb.shape == (3, 32)
    emb.pow(2).sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert not model.features.weight.requires_grad
    tokens = model.forward_features(x)
    assert tokens.shape == (3, 49, model.ssl_dim)
    # SSL pooling runs on local views of any size divisible by 16.
    assert model.forward_ssl(torch.randn(2, 3, 48, 48)).shape == (2, model.ssl_dim)
    with pytest.raises(ValueError, match="112"):
        model(torch.randn(2, 3, 48, 48))


def test_tokens_are_row_major_feature_map():
    model = create_model("iresnet_test").eval()
    x = torch.randn(1, 3, 112, 112)
    fmap = model.forward_map(x)
    tokens = model.forward_features(x)
    torch.testing.assert_close(tokens[0, 8], fmap[0, :, 1, 1])


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = create_model("iresnet_test")
    b = create_model("iresnet_test")
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing()
    x = torch.randn(2, 3, 112, 112)
    a(x).sum().backward()
    b(x).sum().backward()
    torch.testing.assert_close(a.layer2[0].conv1.weight.grad, b.layer2[0].conv1.weight.grad)


def test_group_matcher_covers_every_parameter():
    import re

    model = create_model("iresnet_test")
    groups = model.group_matcher()
    pats = [groups["stem"], groups["blocks"], groups["head"]]
    for name, _ in model.named_parameters():
        assert any(re.match(p, name) for p in pats), name


def test_bad_stage_count_is_rejected():
    with pytest.raises(ValueError, match="4 stages"):
        IResNet(layers=(1, 1, 1))
