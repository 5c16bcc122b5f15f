"""Landmark patch sampling: unfold equality on grid centres, mosaic, gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lafslib.layers import grid_centers, patches_to_mosaic, sample_patches


def test_equals_unfold_on_grid_centres() -> None:
    x = torch.randn(2, 3, 112, 112, dtype=torch.float64)
    centres = grid_centers(14, dtype=torch.float64).expand(2, -1, -1)
    patches = sample_patches(x, centres, 8)
    unfold = F.unfold(x, 8, stride=8).transpose(1, 2).reshape(2, 196, 3, 8, 8)
    torch.testing.assert_close(patches, unfold, atol=1e-10, rtol=0)
    torch.testing.assert_close(patches_to_mosaic(patches, 14), x, atol=1e-10, rtol=0)


def test_float32_equals_unfold_to_rounding() -> None:
    x = torch.rand(4, 3, 112, 112) * 2 - 1
    patches = sample_patches(x, grid_centers(14).expand(4, -1, -1), 8)
    unfold = F.unfold(x, 8, stride=8).transpose(1, 2).reshape(4, 196, 3, 8, 8)
    torch.testing.assert_close(patches, unfold, atol=2.5e-5, rtol=0)  # not bit-equal


def test_rectangular_grid_and_odd_patch() -> None:
    x = torch.randn(1, 1, 30, 35, dtype=torch.float64)
    centres = grid_centers((6, 7), dtype=torch.float64)[None]
    patches = sample_patches(x, centres, 5)
    unfold = F.unfold(x, 5, stride=5).transpose(1, 2).reshape(1, 42, 1, 5, 5)
    torch.testing.assert_close(patches, unfold, atol=1e-10, rtol=0)


def test_shifted_centre_interpolates_and_pads_with_zeros() -> None:
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    # centre of pixel (row 1, col 1) shifted half a pixel right: mean of columns 1 and 2
    c = torch.tensor([[[2.0 / 4, 1.5 / 4]]], dtype=torch.float64)
    p = sample_patches(x, c, 1)
    assert p.item() == (x[0, 0, 1, 1] + x[0, 0, 1, 2]).item() / 2
    outside = sample_patches(x, torch.tensor([[[3.0, 3.0]]], dtype=torch.float64), 2)
    assert outside.abs().max() == 0


def test_differentiable_wrt_centres() -> None:
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    c = torch.tensor([[[0.43, 0.37], [0.61, 0.52]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda cc: sample_patches(x, cc, 3), (c,))
