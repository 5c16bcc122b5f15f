"""insightface .bin sets: real LFW, writer round trip, restricted unpickler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from lafslib.data.verification import UnsafePickleError, load_bin, load_bin_raw, write_bin


def test_lfw_bin_loads(lfw_bin: Path) -> None:
    images, issame = load_bin(lfw_bin)
    assert images.shape == (12000, 112, 112, 3) and images.dtype == np.uint8
    assert issame.shape == (6000,) and issame.sum() == 3000
    assert issame[:300].all() and not issame[300:600].any()  # pairs.txt fold order


def test_mini_bin_and_roundtrip(faces_mini: Path, tmp_path: Path) -> None:
    bins, issame = load_bin_raw(faces_mini / "lfw_mini.bin")
    assert len(bins) == 200 and issame.sum() == 50
    # as lfw.bin: 10 folds of 10 pairs, each 5 same then 5 different (both classes in a fold)
    assert issame.tolist() == ([True] * 5 + [False] * 5) * 10
    out = write_bin(tmp_path / "copy.bin", bins, issame)
    a, sa = load_bin(faces_mini / "lfw_mini.bin")
    b, sb = load_bin(out)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    out2 = write_bin(tmp_path / "arrays.bin", a[:4], np.array([True, False]))
    c, sc = load_bin(out2)
    assert np.abs(c.astype(int) - a[:4]).mean() < 3 and sc.tolist() == [True, False]


def test_numpy_bool_issame_accepted(tmp_path: Path, faces_mini: Path) -> None:
    bins, _ = load_bin_raw(faces_mini / "lfw_mini.bin")
    path = tmp_path / "np.bin"
    with path.open("wb") as f:
        pickle.dump((bins[:4], np.array([True, False])), f)
    assert load_bin_raw(path)[1].tolist() == [True, False]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Evil.marker),))


def test_malicious_pickle_rejected_without_running(tmp_path: Path) -> None:
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"x", b"y"], [_Evil()])))
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_bin(path)
    assert not _Evil.marker.exists()


def test_malformed_bin(tmp_path: Path) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(ValueError, match="3 images for 1 pairs"):
        load_bin_raw(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.bin"):
        load_bin_raw(path)
