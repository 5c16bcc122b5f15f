"""Landmark grids: N landmark-localized patch centres for any face from 5 or 68 points.

The canonical ``G x G`` grid of patch centres of a 112x112 ArcFace-aligned crop is mapped into
each image by the similarity transform estimated from its detected landmarks, so every image gets
N = G*G centres that follow its face (LAFS with detector landmarks instead of a learned CNN).
As an option (``method="tps"``) the grid is mapped by a thin-plate spline through the detected
points instead, fitted from the canonical 68-point mean shape (or the 5-point ArcFace template),
so the grid also follows non-rigid differences (face width, mouth opening, pose).
"""

from __future__ import annotations

import functools

import numpy as np

from lafslib.landmarks.mean_shape import MEAN_SHAPE_68_112
from lafslib.landmarks.template import (
    landmarks68_to_5,
    template_for_size,
    transform_points,
)
from lafslib.landmarks.tps import fit_tps

__all__ = ["template_grid", "landmark_grid", "grid_flip_index", "FLIP_5", "FLIP_68"]

FLIP_5 = np.array([1, 0, 2, 4, 3])
FLIP_68 = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)


def template_grid(grid: int = 14, size: int = 112) -> np.ndarray:
    """Centres of the regular ``grid x grid`` patch grid of a ``size`` crop, (N, 2) px, row-major."""
    c = (np.arange(grid) + 0.5) * size / grid
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.stack([xx.reshape(-1), yy.reshape(-1)], axis=1)


@functools.lru_cache(maxsize=16)
def _template_grid_cached(grid: int, size: int) -> np.ndarray:
    out = template_grid(grid, size)
    out.flags.writeable = False
    return out


def landmark_grid(
    landmarks: np.ndarray,
    grid: int = 14,
    size: int = 112,
    method: str = "similarity",
    regularization: float = 0.0,
) -> np.ndarray:
    """N = grid*grid patch centres (pixels) for a face with 5 or 68 detected points.

    Args:
        landmarks: (5, 2) or (68, 2) pixel points, or already (grid*grid, 2) centres.
        grid: side of the landmark grid.
        size: size of the aligned template crop the grid is defined in.
        method: "similarity" (least-squares similarity from the 5 points; 68 points are
            reduced to 5) or "tps" (thin-plate spline from the 68-point mean shape, or the
            5-point template, through the detected points).
        regularization: thin-plate-spline smoothing (0 interpolates the points exactly).

    Returns:
        (grid*grid, 2) centres in pixels, row-major.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if method not in ("similarity", "tps"):
        raise ValueError(f"method must be 'similarity' or 'tps', got {method!r}")
    if len(landmarks) == grid * grid:
        return landmarks
    if len(landmarks) not in (5, 68):
        raise ValueError(f"landmark grid needs 5, 68 or {grid * grid} points, got {len(landmarks)}")
    if method == "tps":
        src = MEAN_SHAPE_68_112 if len(landmarks) == 68 else template_for_size(112)
        tps = fit_tps(src * (size / 112.0), landmarks, regularization)
        return tps(_template_grid_cached(grid, size))
    if len(landmarks) == 68:
        landmarks = landmarks68_to_5(landmarks)
    return transform_points(
        _template_grid_cached(grid, size), _similarity_2d(template_for_size(size), landmarks)
    )


def _similarity_2d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity src -> dst in closed form (2-D Umeyama, no SVD): (2, 3).

    In complex numbers the optimal rotation-and-scale is ``z = sum(conj(s) d) / sum(|s|^2)``
    for centred points; equals :func:`lafslib.landmarks.template.similarity_transform`.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    norm = (sc**2).sum()
    a = (sc * dc).sum() / norm
    b = (sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum() / norm
    rs = np.array([[a, -b], [b, a]])
    return np.hstack([rs, (mu_d - rs @ mu_s)[:, None]])


def grid_flip_index(grid: int) -> np.ndarray:
    """Index map of a horizontal flip on a row-major grid: (r, c) -> (r, grid - 1 - c)."""
    idx = np.arange(grid * grid).reshape(grid, grid)
    return idx[:, ::-1].reshape(-1)
