"""Robust decoding: every bad image kind is converted or skipped and counted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lafslib.data.folder import ImageFolderDataset
from lafslib.errors import DataError
from lafslib.io import BadImageError, decode_image, read_image


def _save(path: Path, img: Image.Image, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


def _good(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (112, 112, 3), np.uint8))


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    _save(root / "a" / "rgb.jpg", _good(), "JPEG")
    _save(root / "a" / "gray.png", _good().convert("L"), "PNG")
    _save(root / "a" / "rgba.png", _good().convert("RGBA"), "PNG")
    _save(root / "a" / "cmyk.jpg", _good().convert("CMYK"), "JPEG")
    arr16 = (np.arange(112 * 112, dtype=np.uint16).reshape(112, 112) * 5).astype(np.uint16)
    _save(root / "a" / "sixteen.png", Image.fromarray(arr16), "PNG")
    _save(root / "b" / "huge.jpg", Image.new("RGB", (6000, 4000), (200, 10, 10)), "JPEG")
    buf = io.BytesIO()
    _good(1).save(buf, format="JPEG")
    (root / "b" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "text.png").write_text("this is not an image")
    return root


def test_conversions(zoo: Path) -> None:
    for name in ("rgb.jpg", "gray.png", "rgba.png", "cmyk.jpg", "sixteen.png"):
        img = read_image(zoo / "a" / name)
        assert img.dtype == np.uint8 and img.shape == (112, 112, 3), name
    gray = read_image(zoo / "a" / "gray.png")
    assert (gray[..., 0] == gray[..., 1]).all()
    sixteen = read_image(zoo / "a" / "sixteen.png")
    assert sixteen.max() > 100  # rescaled from 16 bits, not clipped to black/white
    huge = read_image(zoo / "b" / "huge.jpg", max_side=1024)
    assert max(huge.shape[:2]) <= 1024 and huge[..., 0].mean() > 150


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.jpg", "text.png"])
def test_bad_files_raise_named_errors(zoo: Path, name: str) -> None:
    with pytest.raises(BadImageError, match=name):
        read_image(zoo / "b" / name)


def test_dataset_skips_and_counts_bad_images(zoo: Path) -> None:
    ds = ImageFolderDataset(zoo, labelled=True)
    assert len(ds) == 9 and ds.num_classes == 2
    seen = []
    with pytest.warns(RuntimeWarning, match="skipping unreadable image"):
        for i in range(len(ds)):
            seen.append(ds[i]["path"])
    assert ds.bad_images.count == 3
    assert all(s.split("/")[-1] not in ("truncated.jpg", "empty.jpg", "text.png") for s in seen)


def test_dataset_with_no_readable_image_fails(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.jpg").write_bytes(b"")
    (tmp_path / "x" / "b.jpg").write_text("nope")
    ds = ImageFolderDataset(tmp_path)
    with pytest.warns(RuntimeWarning), pytest.raises(DataError, match="no readable image") as exc:
        ds[0]
    assert str(tmp_path) in str(exc.value)  # a user error naming the folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageFolderDataset(tmp_path / "empty")


def test_decode_bytes_roundtrip() -> None:
    buf = io.BytesIO()
    _good(3).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), np.asarray(_good(3)))
