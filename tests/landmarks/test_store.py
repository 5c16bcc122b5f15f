"""Landmark sidecars: CSV and NPZ forms, validation errors naming file and row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lafslib.landmarks.store import LandmarkFileError, load_landmarks, save_landmarks


def test_real_celeba_sidecar(celeba_112: Path) -> None:
    table = load_landmarks(celeba_112 / "landmarks5.csv", num_points=5, image_size=112)
    assert len(table) == 6019 and table.num_points == 5
    pts = table["07201/001085.jpg"]
    np.testing.assert_allclose(pts[0], [36.05, 56.39], atol=1e-4)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_roundtrip(tmp_path: Path, suffix: str) -> None:
    pts = np.random.default_rng(0).uniform(0, 112, (4, 68, 2)).astype(np.float32)
    keys = ["a/1.jpg", "a/2.jpg", "b/1.jpg", "c/x.png"]
    table = load_landmarks(save_landmarks(tmp_path / f"lm{suffix}", keys, pts), num_points=68)
    for k, p in zip(keys, pts):
        np.testing.assert_allclose(table[k], p, atol=1e-3)
    assert "./a/1.jpg" in table


def test_npz_record_indices(tmp_path: Path) -> None:
    pts = np.zeros((3, 5, 2), np.float32) + 50
    table = load_landmarks(save_landmarks(tmp_path / "r.npz", [1, 2, 3], pts))
    assert 2 in table and table[3].shape == (5, 2)


def test_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("path,x0,y0\na.jpg,1,2\nb.jpg,nan,3\n")
    with pytest.raises(LandmarkFileError, match=r"bad\.csv: row 2 \(b\.jpg\): NaN"):
        load_landmarks(path)
    path.write_text("path,x0,y0\na.jpg,1,2\nb.jpg,1\n")
    with pytest.raises(LandmarkFileError, match="line 3: expected 3 fields"):
        load_landmarks(path)
    path.write_text("path,x0,y0\na.jpg,1,900\n")
    with pytest.raises(LandmarkFileError, match="outside the 112px image"):
        load_landmarks(path, image_size=112)
    path.write_text("path,x0,y0\na.jpg,1,2\n")
    with pytest.raises(LandmarkFileError, match="expected 5 points"):
        load_landmarks(path, num_points=5)


def test_unreadable_npz_sidecars_name_the_file(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.npz"  # an object array: loading it would need pickle
    np.savez(hostile, keys=np.array(["a.jpg"]), points=np.array([object()], dtype=object))
    not_zip = tmp_path / "plain.npz"
    np.save(tmp_path / "plain.npy", np.zeros((1, 5, 2)))
    (tmp_path / "plain.npy").rename(not_zip)
    flat = tmp_path / "flat.npz"
    np.savez(flat, keys=np.array(["a.jpg"]), points=np.zeros((1, 10)))
    text = tmp_path / "latin1.csv"
    text.write_bytes("path,x0,y0\n\xe9.jpg,1,2\n".encode("latin-1"))
    for path, reason in ((hostile, "pickle"), (not_zip, "not an .npz"), (flat, "shape"),
                         (text, "not a readable")):  # fmt: skip
        with pytest.raises(LandmarkFileError, match=rf"{path.name}: .*{reason}"):
            load_landmarks(path)
