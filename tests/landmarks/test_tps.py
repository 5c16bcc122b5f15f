"""Thin-plate splines and the TPS landmark grid on exact synthetic landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from lafslib.data.synthetic import render_face
from lafslib.landmarks.grid import FLIP_68, _similarity_2d, landmark_grid, template_grid
from lafslib.landmarks.mean_shape import MEAN_SHAPE_68_112
from lafslib.landmarks.template import (
    ARCFACE_TEMPLATE_112,
    landmarks68_to_5,
    similarity_transform,
    transform_points,
)
from lafslib.landmarks.tps import fit_tps


def _similarity(angle: float, scale: float, t: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, t[0]], [s, c, t[1]]])


@pytest.mark.parametrize("regularization", [0.0, 0.1, 10.0])
@pytest.mark.parametrize("template", [MEAN_SHAPE_68_112, ARCFACE_TEMPLATE_112])
def test_tps_through_a_similarity_is_that_similarity(
    template: np.ndarray, regularization: float
) -> None:
    m = _similarity(0.35, 1.6, (-20.0, 31.0))
    tps = fit_tps(template, transform_points(template, m), regularization)
    query = np.random.default_rng(0).uniform(-50, 160, size=(500, 2))
    np.testing.assert_allclose(tps(query), transform_points(query, m), atol=1e-4)


def test_tps_interpolates_control_points() -> None:
    src = MEAN_SHAPE_68_112
    dst = render_face(3, 5)["landmarks68"].astype(np.float64)
    tps = fit_tps(src, dst)
    np.testing.assert_allclose(tps(src), dst, atol=1e-6)
    assert tps(src[None]).shape == (1, 68, 2)
    # smoothing trades exactness for smoothness: residuals grow with the regularisation
    res = [np.abs(fit_tps(src, dst, lam)(src) - dst).max() for lam in (0.0, 0.01, 1.0)]
    assert res[0] < 1e-6 < res[1] < res[2]
    with pytest.raises(ValueError):
        fit_tps(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        fit_tps(src, dst, -1.0)


def test_tps_landmark_grid() -> None:
    # on the mean shape itself the TPS grid is the canonical grid
    np.testing.assert_allclose(
        landmark_grid(MEAN_SHAPE_68_112, method="tps"), template_grid(), atol=1e-6
    )
    # a similarity-moved face: TPS and similarity grids agree (5 points: exactly)
    m = _similarity(-0.2, 0.8, (5.0, 9.0))
    five = transform_points(ARCFACE_TEMPLATE_112, m)
    np.testing.assert_allclose(
        landmark_grid(five, method="tps"), transform_points(template_grid(), m), atol=1e-6
    )
    np.testing.assert_allclose(
        landmark_grid(transform_points(MEAN_SHAPE_68_112, m), method="tps"),
        transform_points(template_grid(), m),
        atol=1e-4,
    )
    # a real (synthetic) face: the TPS grid passes near the similarity grid but is not equal
    lm = render_face(1, 2)["landmarks68"].astype(np.float64)
    tps, sim = landmark_grid(lm, method="tps"), landmark_grid(lm)
    assert tps.shape == (196, 2) and 0.1 < np.abs(tps - sim).mean() < 8
    with pytest.raises(ValueError, match="method"):
        landmark_grid(lm, method="bogus")


def test_closed_form_similarity_equals_umeyama() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        src, dst = rng.normal(size=(5, 2)) * 30, rng.normal(size=(5, 2)) * 30
        np.testing.assert_allclose(
            _similarity_2d(src, dst), similarity_transform(src, dst), atol=1e-9
        )


def test_mean_shape_is_aligned_and_symmetric() -> None:
    assert MEAN_SHAPE_68_112.shape == (68, 2)
    assert np.abs(landmarks68_to_5(MEAN_SHAPE_68_112) - ARCFACE_TEMPLATE_112).max() < 2.5
    mirrored = MEAN_SHAPE_68_112[FLIP_68].copy()
    mirrored[:, 0] = 2 * MEAN_SHAPE_68_112[:, 0].mean() - mirrored[:, 0]
    np.testing.assert_allclose(mirrored, MEAN_SHAPE_68_112, atol=1.0)
