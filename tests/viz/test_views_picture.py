"""View pictures: lafs show-views and the TensorBoard image at the start of pretraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lafslib.cli import main
from lafslib.data import render_face
from lafslib.transforms import LAFSViews
from lafslib.viz import to_uint8, views_grid


def test_views_grid_layout() -> None:
    sample = render_face(0, 0)
    views = LAFSViews()(sample)
    grid = views_grid(sample, views, sample["landmarks5"], scale=1)
    assert grid.shape == (224, 9 * 112, 3)
    np.testing.assert_array_equal(grid[:112, 112:224], to_uint8(views[0]["image"]))
    ys, xs = np.nonzero((grid[:112, :112] == [255, 255, 0]).all(-1))
    assert len(xs) > 0  # landmark dots drawn on the face


def test_show_views_cli(celeba_112: Path, tmp_path: Path) -> None:
    image = sorted((celeba_112 / "images").rglob("*.jpg"))[0]
    out = tmp_path / "v.png"
    assert main(["show-views", str(image), "--out", str(out)]) == 0
    pic = np.asarray(Image.open(out))
    assert pic.shape == (2 * 224, 9 * 224, 3)
    assert main(["show-views", str(image), "--landmarks", "none", "--out", str(out)]) == 0
