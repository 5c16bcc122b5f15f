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


def test_align_face_puts_exact_landmarks_on_the_template() -> None:
    from lafslib.landmarks.template import align_face, template_for_size

    s = render_face(3, 2, size=160)
    m_known = _similarity(0.25, 1.3, (20.0, -10.0))
    # a face whose 5 points are exactly a similarity of the template: alignment recovers it
    five = transform_points(template_for_size(96), m_known)
    crop, m = align_face(s["image"], five, size=96)
    assert crop.shape == (96, 96, 3)
    np.testing.assert_allclose(transform_points(five, m), template_for_size(96), atol=1e-6)
    np.testing.assert_allclose(m, invert_affine(m_known), atol=1e-9)
    # 68 points are reduced to 5 first
    _, m68 = align_face(s["image"], s["landmarks68"], size=112)
    _, m5 = align_face(s["image"], s["landmarks5"], size=112)
    np.testing.assert_allclose(m68, m5, atol=1e-4)


def test_warp_round_trip_restores_the_image() -> None:
    from lafslib.landmarks.template import warp_image

    image = render_face(5, 0, size=128)["image"]
    m = _similarity(0.2, 1.25, (-8.0, 4.0))
    there = warp_image(image, m, (200, 180))
    assert there.shape == (180, 200, 3)
    back = warp_image(there, m, 128, inverse=True).astype(np.float64)
    inner = (slice(24, 104), slice(24, 104))  # away from the black border
    err = np.abs(back[inner] - image[inner].astype(np.float64)).mean()
    assert err < 4.0, err
    # a point moves with the pixels: the brightest pixel of a single-dot image
    dot = np.zeros((64, 64), np.uint8)
    dot[20, 30] = 255
    moved = warp_image(dot.astype(np.float32), m, 128)
    y, x = np.unravel_index(np.argmax(moved), moved.shape)
    np.testing.assert_allclose([x, y], transform_points([30, 20], m), atol=1.0)
