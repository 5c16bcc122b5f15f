"""Directional relighting of views."""

from __future__ import annotations

import math

import pytest
import torch

from lafslib.data import render_face
from lafslib.transforms import LAFSViews, MultiCropViews
from lafslib.transforms.relight import relight


def test_a_ramp_across_each_view_with_its_own_direction() -> None:
    x = torch.full((6, 3, 33, 33), 0.5)
    g = torch.Generator().manual_seed(1)
    y = relight(x, 0.6, generator=g)
    g = torch.Generator().manual_seed(1)
    amp = torch.rand(6, generator=g) * 0.6
    angle = torch.rand(6, generator=g) * 2 * math.pi
    for v in range(6):
        # the centre keeps its value; the gain grows along (cos t, sin t) by amp / sqrt(2) per
        # unit of the [-1, 1] image coordinates, equally on all channels
        assert torch.allclose(y[v, :, 16, 16], torch.tensor(0.5))
        c, s = math.cos(angle[v]), math.sin(angle[v])
        corner = 0.5 * (1 + amp[v] * (c + s) / math.sqrt(2))  # x = y = +1: bottom right
        assert torch.allclose(y[v, :, -1, -1], torch.full((3,), float(corner)), atol=1e-6)
        assert torch.allclose(y[v].mean(), torch.tensor(0.5), atol=1e-6)  # symmetric ramp
    assert len({round(float(y[v, 0, 0, 0]), 6) for v in range(6)}) == 6


def test_off_and_bad_strength() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert relight(x, 0.0) is x
    assert relight(torch.ones(1, 3, 8, 8), 5.0).max() <= 1  # clamped
    with pytest.raises(ValueError, match="strength"):
        relight(x, -0.1)
    with pytest.raises(ValueError, match="relight_strength"):
        LAFSViews(relight_strength=-1)
    with pytest.raises(ValueError, match="relight_strength"):
        MultiCropViews(relight_strength=-1)


@pytest.mark.parametrize("kind", [LAFSViews, MultiCropViews])
def test_views_are_relit(kind: type) -> None:
    sample = render_face(0, 0)
    views = kind(global_views=2, local_views=0, relight_strength=0.8)
    views.colour = lambda x, blur_p, solarize_p, signed=False, uniforms=None: (
        2 * x - 1 if signed else x
    )
    plain = kind(global_views=2, local_views=0)
    plain.colour = views.colour
    torch.manual_seed(0)
    lit = views(sample)
    torch.manual_seed(0)
    ref = plain(sample)
    assert not torch.allclose(lit[0]["image"], ref[0]["image"])
