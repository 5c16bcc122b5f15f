"""Landmark-localized patches (LAFS, Sun & Tzimiropoulos, CVPR 2024) via ``grid_sample``.

Patches of ``p x p`` pixels are sampled bilinearly (zero padding) around arbitrary centres given
in normalised image coordinates, so they are differentiable w.r.t. the centres (Part fViT learns
its landmarks this way). When the centres sit on the centres of the regular patch grid, the
patches equal ``F.unfold`` patches up to the rounding of the sampling positions: ~1e-14 in
float64; in float32 a position is off by up to ~1e-5 pixel at 112 px, so a value differs by up
to ~1e-5 of the step to its neighbour pixel (e.g. <= 2.5e-5 for random images in [-1, 1]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["sample_patches", "patches_to_mosaic", "grid_centers"]


def grid_centers(
    grid_hw: tuple[int, int] | int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Centres of a regular ``gh x gw`` patch grid in [0, 1] as (x, y), row-major: (N, 2)."""
    gh, gw = (grid_hw, grid_hw) if isinstance(grid_hw, int) else grid_hw
    ys = (torch.arange(gh, dtype=dtype, device=device) + 0.5) / gh
    xs = (torch.arange(gw, dtype=dtype, device=device) + 0.5) / gw
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def sample_patches(images: torch.Tensor, centers: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Sample square patches centred at landmark positions.

    Args:
        images: (B, C, H, W).
        centers: (B, N, 2) patch centres as (x, y) in [0, 1] of width and height.
        patch_size: p, the patch side in pixels (of the input image).

    Returns:
        (B, N, C, p, p) patches.
    """
    if images.ndim != 4 or centers.ndim != 3 or centers.shape[-1] != 2:
        raise ValueError(
            f"expected images (B, C, H, W) and centers (B, N, 2), got {tuple(images.shape)} "
            f"and {tuple(centers.shape)}"
        )
    b, _, h, w = images.shape
    n = centers.shape[1]
    offs = (
        torch.arange(patch_size, device=images.device, dtype=centers.dtype) - (patch_size - 1) / 2
    )
    dy, dx = torch.meshgrid(offs, offs, indexing="ij")
    # continuous pixel coordinates (pixel i covers [i, i + 1]) -> grid_sample's [-1, 1]
    px = centers[..., 0:1] * w + dx.reshape(1, 1, -1)
    py = centers[..., 1:2] * h + dy.reshape(1, 1, -1)
    grid = torch.stack([2 * px / w - 1, 2 * py / h - 1], dim=-1)  # (B, N, p*p, 2)
    out = F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (B, C, N, p*p)
    return rearrange(out, "b c n (p q) -> b n c p q", p=patch_size).reshape(
        b, n, images.shape[1], patch_size, patch_size
    )


def patches_to_mosaic(patches: torch.Tensor, grid_hw: tuple[int, int] | int) -> torch.Tensor:
    """Tile (B, N, C, p, p) patches row-major into a (B, C, gh*p, gw*p) mosaic image."""
    gh, gw = (grid_hw, grid_hw) if isinstance(grid_hw, int) else grid_hw
    if patches.shape[1] != gh * gw:
        raise ValueError(f"{patches.shape[1]} patches do not fill a {gh}x{gw} mosaic")
    return rearrange(patches, "b (gh gw) c p q -> b c (gh p) (gw q)", gh=gh, gw=gw)
