"""Random resized crops drawn per face and rendered for a whole batch by one ``grid_sample``.

The draws (boxes and flips) are made per sample on the CPU, e.g. in a DataLoader worker, as
two separable sampling axes; :func:`render_crops` applies them to a batch on its device. Crop,
resize and flip are one bilinear interpolation (no antialiasing: a global view upsamples its
crop; a 48 px local view of at most 40% of the face, aspect ratio at most 4:3, shrinks it
by at most 1.7x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["UNIFORMS_PER_CROP", "crop_axes", "random_resized_boxes", "render_crops"]

UNIFORMS_PER_CROP = 23
"""Uniforms one crop consumes: 10 tries of area and of aspect ratio, top, left, flip."""


def random_resized_boxes(r: np.ndarray, h: int, w: int, scale: Sequence[float]) -> np.ndarray:
    """RandomResizedCrop boxes ``(top, left, height, width)`` from uniforms: (n, 4).

    The distribution of torchvision's ``RandomResizedCrop.get_params`` (ratio 3/4-4/3, up to 10
    tries, then the whole image clipped to the ratio range), drawn for all crops at once.

    Args:
        r: (n, 22 or more) uniforms in [0, 1): 10 areas, 10 ratios, top, left.
        h, w: source image size.
        scale: area range (low, high) as a share of the image.
    """
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * r[:, :10])
    ratio = np.exp(lo + (hi - lo) * r[:, 10:20])
    cw = np.round(np.sqrt(area * ratio))
    ch = np.round(np.sqrt(area / ratio))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    rows = np.arange(len(r))
    first = ok.argmax(1)  # first accepted try
    cw, ch = cw[rows, first], ch[rows, first]
    top = np.floor(r[:, 20] * (h - ch + 1))
    left = np.floor(r[:, 21] * (w - cw + 1))
    bad = ~ok.any(1)
    if bad.any():
        in_ratio = w / h
        cw[bad] = w if in_ratio <= 4 / 3 else round(h * 4 / 3)
        ch[bad] = h if in_ratio >= 3 / 4 else round(w * 4 / 3)
        top[bad], left[bad] = (h - ch[bad]) // 2, (w - cw[bad]) // 2
    return np.stack([top, left, ch, cw], 1)


def crop_axes(
    boxes: np.ndarray, flip: np.ndarray, size: int, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates in [-1, 1] (``grid_sample`` units) of the pixels of ``size`` x
    ``size`` views of ``boxes`` (n, 4), mirrored where ``flip`` (n,): ``gx``, ``gy`` (n, size).

    The grid is separable: view pixel centre ``u + 0.5`` comes from source
    ``x = left + (u + 0.5) * width / size`` (flipped: ``left + width - ...``).
    """
    top, left, ch, cw = boxes.T
    u = (np.arange(size) + 0.5) / size
    fx = np.where(flip[:, None], 1 - u, u)
    gx = (left[:, None] + fx * cw[:, None]) * (2 / w) - 1
    gy = (top[:, None] + u * ch[:, None]) * (2 / h) - 1
    return torch.from_numpy(gx.astype(np.float32)), torch.from_numpy(gy.astype(np.float32))


def render_crops(images: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Crops of a batch in one bilinear ``grid_sample`` (border padding).

    Args:
        images: uint8 (B, 3, H, W).
        gx, gy: (B, V, S) sampling axes from :func:`crop_axes`, V crops per image.

    Returns:
        float (B * V, 3, S, S) in [0, 1], the V crops of each image in order.
    """
    b, v, s = gx.shape
    gx, gy = gx.reshape(b * v, s), gy.reshape(b * v, s)
    grid = torch.stack([gx[:, None, :].expand(-1, s, -1), gy[:, :, None].expand(-1, -1, s)], -1)
    src = images.float().div_(255.0).repeat_interleave(v, 0)  # (B * V, 3, H, W)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
