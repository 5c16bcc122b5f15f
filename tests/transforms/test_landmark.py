"""Landmark flip, perturbation, subsets and geometric transforms on exact synthetic landmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lafslib.data.synthetic import render_face
from lafslib.landmarks.grid import template_grid
from lafslib.landmarks.template import landmarks68_to_5
from lafslib.transforms.landmark import (
    FLIP_5,
    FLIP_68,
    LandmarkGeometric,
    flip_index,
    flip_landmarks,
    perturb_landmarks,
    shuffle_landmarks,
    subset_landmarks,
)


@pytest.mark.parametrize("k", [5, 68, 196])
def test_flip_twice_is_identity(k: int) -> None:
    pts = torch.rand(3, k, 2)
    torch.testing.assert_close(flip_landmarks(flip_landmarks(pts)), pts)
    arr = pts[0].numpy() * 112
    np.testing.assert_allclose(flip_landmarks(flip_landmarks(arr, 112.0), 112.0), arr, atol=1e-5)


def test_flip_swaps_the_right_indices() -> None:
    s = render_face(1, 2)
    lm5 = s["landmarks5"].astype(np.float64)
    f5 = flip_landmarks(lm5, 112.0)
    # the image-left eye of the flipped face is the mirrored image-right eye, nose stays
    np.testing.assert_allclose(f5[0], [112 - lm5[1, 0], lm5[1, 1]])
    np.testing.assert_allclose(f5[2], [112 - lm5[2, 0], lm5[2, 1]])
    np.testing.assert_allclose(f5[3], [112 - lm5[4, 0], lm5[4, 1]])
    assert f5[0, 0] < f5[1, 0] and f5[3, 0] < f5[4, 0]
    # 68 points: flipping then reducing to 5 equals reducing then flipping
    f68 = flip_landmarks(s["landmarks68"].astype(np.float64), 112.0)
    np.testing.assert_allclose(landmarks68_to_5(f68), f5, atol=1e-4)
    assert f68[36, 0] < f68[45, 0] and f68[48, 0] < f68[54, 0]  # outer eye / mouth corners
    # a regular grid is mirror-symmetric: flipping it gives it back
    g = template_grid(14)
    np.testing.assert_allclose(flip_landmarks(g, 112.0), g, atol=1e-9)
    np.testing.assert_array_equal(flip_index(5), FLIP_5)
    np.testing.assert_array_equal(flip_index(68), FLIP_68)
    with pytest.raises(ValueError, match="no flip map"):
        flip_index(7)


def test_perturbation_keeps_points_inside() -> None:
    pts = torch.tensor([[56.0, 60.0], [111.5, 0.2], [0.0, 112.0]]).expand(500, 3, 2)
    out = perturb_landmarks(pts, sigma=5.0, size=112, generator=torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 112
    assert 4.0 < (out - pts)[:, 0].std() < 6.0  # an interior point moves by ~sigma
    rect = perturb_landmarks(pts, 5.0, (120, 100))
    assert rect[..., 0].max() <= 120 and rect[..., 1].max() <= 100 and rect.min() >= 0
    norm = perturb_landmarks(torch.rand(100, 5, 2), 5.0, 112, normalized=True)
    assert norm.min() >= 0 and norm.max() <= 1
    assert perturb_landmarks(pts, 0.0, 112).equal(pts)


@pytest.mark.parametrize("replace", [True, False])
def test_subset_sizes_and_seed_determinism(replace: bool) -> None:
    pts = torch.rand(8, 196, 2)
    sub, idx = subset_landmarks(pts, 36, replace, torch.Generator().manual_seed(1))
    assert sub.shape == (8, 36, 2) and idx.shape == (8, 36)
    torch.testing.assert_close(sub, torch.gather(pts, 1, idx[..., None].expand(-1, -1, 2)))
    sub2, idx2 = subset_landmarks(pts, 36, replace, torch.Generator().manual_seed(1))
    assert idx.equal(idx2) and sub.equal(sub2)
    assert not idx.equal(subset_landmarks(pts, 36, replace, torch.Generator().manual_seed(2))[1])
    if not replace:
        assert all(len(set(row.tolist())) == 36 for row in idx)
        with pytest.raises(ValueError):
            subset_landmarks(pts, 197, replace=False)
    else:
        assert subset_landmarks(pts, 300)[0].shape == (8, 300, 2)


def test_shuffle_is_a_permutation() -> None:
    pts = torch.rand(4, 68, 2)
    out, idx = shuffle_landmarks(pts, torch.Generator().manual_seed(0))
    assert (idx.sort(-1).values == torch.arange(68)).all()
    torch.testing.assert_close(out.sort(1).values, pts.sort(1).values)


def _dots(points: np.ndarray, idx: list[int], size: int = 112, sigma: float = 1.2) -> np.ndarray:
    """One small bright Gaussian dot per channel, at landmark ``idx[c]`` (continuous px)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    img = np.zeros((size, size, len(idx)))
    for c, i in enumerate(idx):
        d2 = (xx - points[i, 0]) ** 2 + (yy - points[i, 1]) ** 2
        img[..., c] = 255 * np.exp(-d2 / (2 * sigma**2))
    return img.round().astype(np.uint8)


def _centroid(channel: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0 : channel.shape[0], 0 : channel.shape[1]] + 0.5
    w = channel.astype(np.float64)
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_geometric_moves_landmarks_with_pixels(flip_p: float) -> None:
    idx = [0, 2, 4]  # image-left eye, nose tip, image-right mouth corner
    checked = 0
    for seed in range(6):
        face = render_face(seed, 1)
        lm = face["landmarks5"].astype(np.float64)
        img = _dots(lm, idx)
        geo = LandmarkGeometric(
            crop_scale=(0.3, 1.0), rotate=(-30.0, 30.0), scale=(0.8, 1.2), flip_p=flip_p, seed=seed
        )
        out, pts, visible = geo.apply(img, lm)
        out_face, pts_face, _ = LandmarkGeometric(
            crop_scale=(0.3, 1.0), rotate=(-30.0, 30.0), scale=(0.8, 1.2), flip_p=flip_p, seed=seed
        ).apply(face["image"], lm)
        assert out.shape == (112, 112, 3) and out_face.shape == (112, 112, 3)
        np.testing.assert_allclose(pts_face, pts)  # same seed, same move of the face
        for c, i in enumerate(idx):
            j = FLIP_5[i] if flip_p else i
            inside = (pts[j] > 4).all() and (pts[j] < 108).all()
            assert visible[j] or not inside
            if inside:
                np.testing.assert_allclose(_centroid(out[..., c]), pts[j], atol=0.3)
                checked += 1
    assert checked >= 8


def test_points_leaving_the_frame_are_reported() -> None:
    lm = np.array([[56.0, 56.0], [1.0, 1.0], [111.0, 111.0], [60.0, 50.0], [50.0, 60.0]])
    img = np.zeros((112, 112, 3), np.uint8)
    kwargs = {"crop_scale": (0.1, 0.1), "rotate": (40.0, 40.0), "flip_p": 0.0, "seed": 0}
    _, pts, visible = LandmarkGeometric(**kwargs).apply(img, lm)
    outside = (pts < 0).any(1) | (pts > 112).any(1)
    assert outside.any() and np.array_equal(visible, ~outside) and len(pts) == 5
    _, clipped, visible2 = LandmarkGeometric(outside="clip", **kwargs).apply(img, lm)
    np.testing.assert_array_equal(visible2, visible)
    np.testing.assert_allclose(clipped, pts.clip(0, 112))
    sample = LandmarkGeometric(seed=1)({"image": img, "landmarks": lm, "label": 3})
    assert sample["label"] == 3 and sample["visible"].shape == (5,)
    with pytest.raises(ValueError, match="outside"):
        LandmarkGeometric(outside="drop")
