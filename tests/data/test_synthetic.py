"""Synthetic faces: exact landmarks, determinism, identity consistency."""

from __future__ import annotations

import numpy as np
import pytest

from lafslib.data.synthetic import SyntheticFaces, identity_params, render_face

ARCFACE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def test_deterministic_and_distinct() -> None:
    a, b = render_face(3, 1), render_face(3, 1)
    assert np.array_equal(a["image"], b["image"])
    assert np.array_equal(a["landmarks68"], b["landmarks68"])
    c = render_face(3, 2)
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(render_face(3, 1, seed=1)["image"], a["image"])


def test_five_points_are_derived_from_68() -> None:
    s = render_face(5, 4)
    lm68, lm5 = s["landmarks68"], s["landmarks5"]
    np.testing.assert_allclose(lm5[0], lm68[36:42].mean(0), atol=1e-5)
    np.testing.assert_allclose(lm5[1], lm68[42:48].mean(0), atol=1e-5)
    np.testing.assert_allclose(lm5[2:], lm68[[30, 48, 54]], atol=1e-5)
    assert lm5[0, 0] < lm5[1, 0] and lm5[3, 0] < lm5[4, 0]  # image-left first


@pytest.mark.parametrize("size", [112, 224])
def test_pupils_are_drawn_at_the_eye_landmarks(size: int) -> None:
    for ident in range(6):
        s = render_face(ident, ident, size=size)
        img = s["image"].astype(float).sum(-1)
        for x, y in s["landmarks5"][:2]:
            # the pupil (black) sits exactly on the eye centre; pixels there are darkest
            val = img[int(round(y)), int(round(x))]
            ring = img[int(round(y)) - 6 * size // 112, int(round(x))]
            assert val < 60 and val < ring


def test_roughly_aligned_to_arcface_template() -> None:
    pts = np.stack([render_face(i, j)["landmarks5"] for i in range(10) for j in range(3)])
    assert np.abs(pts.mean(0) - ARCFACE).max() < 4.0


def test_identity_parameters_fixed_across_samples() -> None:
    ds = SyntheticFaces(num_identities=3, images_per_identity=4)
    assert len(ds) == 12 and ds.num_classes == 3
    assert [ds[i]["label"] for i in range(12)] == [i // 4 for i in range(12)]
    p = identity_params(1)
    np.testing.assert_array_equal(p["skin"], identity_params(1)["skin"])
    s = ds[5]
    assert s["image"].dtype == np.uint8 and s["image"].shape == (112, 112, 3)
    np.testing.assert_array_equal(s["landmarks"], s["landmarks5"])
    with pytest.raises(IndexError):
        ds[12]
