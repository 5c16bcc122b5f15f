"""Pictures of views: the source face with its landmark grid, then every view as the model sees it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["views_grid", "to_uint8"]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    arr = ((image.detach().float().cpu().permute(1, 2, 0).numpy() + 1.0) * 127.5).round()
    return np.clip(arr, 0, 255).astype(np.uint8)


def views_grid(
    sample: dict[str, Any],
    views: list[dict[str, Any]],
    points: np.ndarray | None = None,
    scale: int = 2,
) -> np.ndarray:
    """One uint8 (H, W, 3) picture: the face with ``points`` (pixels) drawn, then each view.

    Global views (112 px mosaics) fill the first row after the face; local views (smaller
    mosaics) follow on the second row; ``points`` (e.g. the landmark grid the patches are
    sampled around) are drawn as dots on the face.
    """
    face = Image.fromarray(np.asarray(sample["image"])).convert("RGB")
    size = face.size[0]
    draw = ImageDraw.Draw(face)
    if points is not None:
        for x, y in np.asarray(points):
            draw.ellipse((x - 0.8, y - 0.8, x + 0.8, y + 0.8), fill=(255, 255, 0))
    globals_ = [v for v in views if v["is_global"]]
    locals_ = [v for v in views if not v["is_global"]]
    tile = size
    cols = 1 + max(len(globals_), len(locals_))
    canvas = Image.new("RGB", (cols * tile, 2 * tile), (30, 30, 30))
    canvas.paste(face, (0, 0))
    for k, v in enumerate(globals_):
        canvas.paste(
            Image.fromarray(to_uint8(v["image"])).resize((tile, tile)), ((k + 1) * tile, 0)
        )
    for k, v in enumerate(locals_):
        img = Image.fromarray(to_uint8(v["image"]))
        canvas.paste(
            img, ((k + 1) * tile + (tile - img.size[0]) // 2, tile + (tile - img.size[1]) // 2)
        )
    if scale != 1:
        canvas = canvas.resize(
            (canvas.size[0] * scale, canvas.size[1] * scale), Image.Resampling.NEAREST
        )
    return np.asarray(canvas)
