"""`lafs landmarks` (sidecars for aligned data) and `lafs show-landmarks` (pictures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lafslib.cli import main
from lafslib.data.recordio import pack_folder
from lafslib.data.sources import open_dataset
from lafslib.landmarks.store import load_landmarks
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112


def test_template_sidecar_for_a_rec_dataset(faces_mini: Path, tmp_path: Path, capsys) -> None:
    rec = tmp_path / "faces.rec"
    pack_folder(faces_mini / "identities", rec, progress=False)
    assert main(["landmarks", str(rec), "--out", str(tmp_path / "lm.csv"), "--template"]) == 2
    assert "use an .npz sidecar" in capsys.readouterr().err
    out = tmp_path / "faces.landmarks.npz"
    assert main(["landmarks", str(rec), "--out", str(out), "--template", "--quiet"]) == 0
    table = load_landmarks(out)
    assert len(table) == 100 and all(isinstance(k, int) for k in table)
    np.testing.assert_allclose(table[7], ARCFACE_TEMPLATE_112, atol=1e-3)
    ds = open_dataset(rec, landmarks=out)
    assert ds.sample(3)["landmarks"].shape == (5, 2)


def test_dlib_sidecar_for_an_aligned_folder(faces_mini: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("dlib")
    out = tmp_path / "lm.csv"
    data = faces_mini / "identities"
    code = main(["landmarks", str(data), "--out", str(out), "--detector", "dlib", "--quiet"])
    assert code == 0
    assert '"detected"' in capsys.readouterr().out
    table = load_landmarks(out, num_points=5, image_size=112)
    assert len(table) == 100
    # insightface-aligned crops: detected points lie near the template
    err = np.linalg.norm(table.points - ARCFACE_TEMPLATE_112[None].astype(np.float32), axis=2)
    assert np.median(err) < 4.0
    ds = open_dataset(data, landmarks=out)
    np.testing.assert_allclose(ds.sample(0)["landmarks"], table[ds.sample(0)["path"]])


def test_landmarks_default_to_yunet_and_take_one_source(
    faces_mini: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "x.csv"
    assert main(["landmarks", str(faces_mini / "identities"), "--out", str(out), "--quiet"]) == 0
    table = load_landmarks(out, num_points=5, image_size=112)
    assert len(table) == 100  # YuNet finds every face of the aligned crops
    error = np.mean([np.linalg.norm(table[k] - ARCFACE_TEMPLATE_112, axis=1).mean() for k in table])
    assert error < 4.0, error  # insightface-aligned crops: the points lie on the template
    capsys.readouterr()
    both = ["landmarks", str(faces_mini / "identities"), "--out", str(out), "--template"]
    assert main([*both, "--detector", "dlib"]) == 2
    assert "--detector NAME or --template" in capsys.readouterr().err


def test_show_landmarks_draws_sidecar_points(celeba_112: Path, tmp_path: Path, capsys) -> None:
    images = sorted((celeba_112 / "images").glob("*/*.jpg"))[:3]
    out = tmp_path / "grid.png"
    assert main(["show-landmarks", *map(str, images), "--out", str(out), "--scale", "2"]) == 0
    assert "3 with landmarks" in capsys.readouterr().out
    grid = np.asarray(Image.open(out))
    assert grid.shape == (224, 3 * 224, 3)
    # the first face's right-eye point is drawn in red where the sidecar puts it
    table = load_landmarks(celeba_112 / "landmarks5.csv")
    key = images[0].relative_to(celeba_112).as_posix()
    key = key if key in table else images[0].relative_to(celeba_112 / "images").as_posix()
    x, y = (table[key][0] * 2).round().astype(int)
    r, g, b = grid[y, x].astype(int)
    assert r > 200 and g < 120 and b < 120
