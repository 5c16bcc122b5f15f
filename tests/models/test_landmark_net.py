"""Landmark CNN: output range, grid initialisation, LAFS trunk layout, torchvision trunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lafslib.layers.patch_sampling import grid_centers
from lafslib.models.landmark_net import LandmarkNet, MobileNetV3Trunk, uniform_grid

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def test_uniform_grid_matches_patch_grid_centres():
    torch.testing.assert_close(uniform_grid(196), grid_centers(14))
    with pytest.raises(ValueError, match="square"):
        uniform_grid(50)


def test_minmax_output_spans_coord_range():
    net = LandmarkNet(num_landmarks=49, trunk="lafs_small", width_mult=0.5, coord_range=(0.1, 0.8))
    out = net.eval()(torch.randn(3, 3, 112, 112))
    assert out.shape == (3, 49, 2)
    flat = out.flatten(1)
    torch.testing.assert_close(flat.amin(1), torch.full((3,), 0.1))
    torch.testing.assert_close(flat.amax(1), torch.full((3,), 0.8))


def test_minmax_is_interleaved_xy_of_raw_outputs():
    net = LandmarkNet(num_landmarks=16, trunk="lafs_small", width_mult=0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    raw = net.raw(x)
    expected = (raw - raw.amin(1, keepdim=True)) / (
        raw.amax(1, keepdim=True) - raw.amin(1, keepdim=True)
    )
    torch.testing.assert_close(net(x)[:, 3], expected[:, 6:8])


@pytest.mark.parametrize("output", ["sigmoid", "minmax"])
def test_grid_initialisation_predicts_the_grid(output):
    g = uniform_grid(49)
    rng = (float(g.min()), float(g.max())) if output == "minmax" else (0.0, 1.0)
    net = LandmarkNet(
        num_landmarks=49,
        trunk="lafs_small",
        width_mult=0.5,
        output=output,
        coord_range=rng,
        init_grid=True,
    ).eval()
    out = net(torch.randn(2, 3, 112, 112))
    torch.testing.assert_close(out, g.expand(2, -1, -1), atol=2e-4, rtol=0)


def test_lafs_trunk_layout_matches_release():
    ref = json.loads((GOLDEN / "lafs_part_fvit_tiny_keys.json").read_text())
    ref_trunk = {k[len("stn.") :]: v for k, v in ref.items() if k.startswith("stn.")}
    ours = {k: list(v.shape) for k, v in MobileNetV3Trunk("large").state_dict().items()}
    assert ours == ref_trunk
    assert MobileNetV3Trunk("large").out_channels == 160


@pytest.mark.parametrize("trunk", ["mobilenet_v3_small", "lafs_large"])
def test_trunks_regress_and_backpropagate(trunk):
    net = LandmarkNet(num_landmarks=196, trunk=trunk, width_mult=0.5 if "small" in trunk else 1.0)
    x = torch.randn(1, 3, 112, 112)
    out = net(x)
    assert out.shape == (1, 196, 2)
    assert out.min() >= 0 and out.max() <= 1
    out[:, :, 0].mean().backward()
    first = next(p for p in net.trunk.parameters() if p.ndim == 4)
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_unknown_trunk_and_output_are_rejected():
    with pytest.raises(ValueError, match="unknown landmark trunk"):
        LandmarkNet(trunk="resnet50")
    with pytest.raises(ValueError, match="output"):
        LandmarkNet(output="tanh")
