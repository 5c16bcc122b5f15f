"""Umeyama similarity, 68 -> 5, landmark grid and flip maps on exact synthetic landmarks."""

from __future__ import annotations

import numpy as np

from lafslib.data.synthetic import render_face
from lafslib.landmarks.grid import FLIP_5, FLIP_68, grid_flip_index, landmark_grid, template_grid
from lafslib.landmarks.template import (
    ARCFACE_TEMPLATE_112,
    invert_affine,
    landmarks68_to_5,
    similarity_transform,
    transform_points,
)


def _similarity(angle: float, scale: float, t: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, t[0]], [s, c, t[1]]])


def test_umeyama_recovers_known_transform() -> None:
    src = render_face(2, 3)["landmarks68"].astype(np.float64)
    m = _similarity(0.3, 1.7, (12.5, -4.0))
    est = similarity_transform(src, transform_points(src, m))
    np.testing.assert_allclose(est, m, atol=1e-6)
    np.testing.assert_allclose(
        transform_points(transform_points(src, m), invert_affine(m)), src, atol=1e-9
    )


def test_68_to_5_matches_synthetic_five_points() -> None:
    s = render_face(4, 1)
    np.testing.assert_allclose(landmarks68_to_5(s["landmarks68"]), s["landmarks5"], atol=1e-5)


def test_landmark_grid_follows_the_face() -> None:
    np.testing.assert_allclose(landmark_grid(ARCFACE_TEMPLATE_112), template_grid(), atol=1e-9)
    m = _similarity(-0.2, 0.8, (5.0, 9.0))
    moved = transform_points(ARCFACE_TEMPLATE_112, m)
    np.testing.assert_allclose(
        landmark_grid(moved), transform_points(template_grid(), m), atol=1e-9
    )


def test_flip_maps_are_involutions_and_swap_sides() -> None:
    for idx in (FLIP_5, FLIP_68, grid_flip_index(14)):
        np.testing.assert_array_equal(idx[idx], np.arange(len(idx)))
    s = render_face(1, 1, size=112)
    flipped = s["landmarks68"][FLIP_68].copy()
    flipped[:, 0] = 112 - flipped[:, 0]
    five = landmarks68_to_5(flipped)
    ref = s["landmarks5"][FLIP_5].copy()
    ref[:, 0] = 112 - ref[:, 0]
    np.testing.assert_allclose(five, ref, atol=1e-4)
    g = template_grid(14)
    gf = g[grid_flip_index(14)].copy()
    gf[:, 0] = 112 - gf[:, 0]
    np.testing.assert_allclose(gf, g, atol=1e-9)
