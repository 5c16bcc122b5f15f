"""Pictures of faces with their landmarks and landmark indices (PNG and TensorBoard)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["draw_landmarks", "landmarks_grid", "log_landmarks"]

_COLOURS = [(255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 220, 0), (255, 64, 255)]


def draw_landmarks(
    image: np.ndarray, points: np.ndarray | None, scale: float | None = None, indices: bool = True
) -> np.ndarray:
    """Draw ``points`` (K, 2 pixels) on an uint8 (H, W, 3) image resized ``scale`` times
    (None: the longest side becomes 336 px, i.e. 3x for 112 px crops).

    Points are numbered when ``indices`` (5-point sets coloured per point, larger sets in one
    colour) so left/right conventions can be checked by eye.
    """
    img = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    scale = scale or 336 / max(img.size)
    img = img.resize(
        (round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC
    )
    if points is None:
        return np.asarray(img)
    draw = ImageDraw.Draw(img)
    pts = np.asarray(points, dtype=np.float64) * scale
    radius = 2.5 if len(pts) <= 68 else 1.5
    for i, (x, y) in enumerate(pts):
        colour = _COLOURS[i % len(_COLOURS)] if len(pts) <= 5 else (255, 220, 0)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        if indices and len(pts) <= 68:
            draw.text((x + radius, y - 4 * radius), str(i), fill=colour)
    return np.asarray(img)


def landmarks_grid(
    images: Sequence[np.ndarray],
    points: Sequence[np.ndarray | None],
    scale: float | None = None,
    cols: int | None = None,
    indices: bool = True,
) -> np.ndarray:
    """Tile faces with their landmarks into one uint8 picture (cells of the largest face's size)."""
    if not images:
        raise ValueError("no images to draw")
    tiles = [draw_landmarks(im, p, scale, indices) for im, p in zip(images, points)]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    cols = cols or min(len(tiles), 6)
    rows = math.ceil(len(tiles) / cols)
    canvas = Image.new("RGB", (cols * w, rows * h), (30, 30, 30))
    for k, tile in enumerate(tiles):
        x = (k % cols) * w + (w - tile.shape[1]) // 2
        y = (k // cols) * h + (h - tile.shape[0]) // 2
        canvas.paste(Image.fromarray(tile), (x, y))
    return np.asarray(canvas)


def log_landmarks(
    writer: Any,
    tag: str,
    images: Sequence[np.ndarray],
    points: Sequence[np.ndarray | None],
    step: int = 0,
    scale: float | None = 2,
) -> None:
    """Log :func:`landmarks_grid` to a TensorBoard ``SummaryWriter``."""
    writer.add_image(tag, landmarks_grid(images, points, scale), step, dataformats="HWC")
