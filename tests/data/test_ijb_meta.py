"""IJB meta files: round trip through the writer, clear errors on malformed files, alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lafslib.data.ijb import (
    IJBMetaError,
    align_loose_crop,
    ijb_meta_paths,
    load_aligned_faces,
    load_ijb_meta,
    read_template_pair_label,
    write_ijb,
)
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112


def _small_set(root: Path) -> Path:
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (130, 120, 3), dtype=np.uint8) for _ in range(6)]
    lm = np.stack([ARCFACE_TEMPLATE_112 + [4, 9]] * 6) + rng.normal(0, 0.5, (6, 5, 2))
    return write_ijb(
        root,
        "IJBC",
        crops,
        templates=[7, 7, 7, 9, 9, 12],
        medias=[1, 1, 2, 1, 5, 6],
        landmarks=lm,
        scores=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        pairs=[[7, 9], [7, 12], [9, 12]],
        labels=[1, 0, 0],
        ext=".png",
    )


def test_round_trip(tmp_path: Path) -> None:
    meta = load_ijb_meta(_small_set(tmp_path), "IJBC")
    assert meta.images == [f"{i}.png" for i in range(1, 7)]
    np.testing.assert_array_equal(meta.templates, [7, 7, 7, 9, 9, 12])
    np.testing.assert_array_equal(meta.medias, [1, 1, 2, 1, 5, 6])
    np.testing.assert_allclose(meta.scores, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], atol=1e-6)
    assert meta.landmarks.shape == (6, 5, 2)
    np.testing.assert_array_equal(meta.pairs, [[7, 9], [7, 12], [9, 12]])
    np.testing.assert_array_equal(meta.labels, [True, False, False])
    images, kp = load_aligned_faces(meta, [0, 3], workers=2)
    assert images.shape == (2, 112, 112, 3) and images.dtype == np.uint8
    np.testing.assert_allclose(kp * 112, np.stack([ARCFACE_TEMPLATE_112] * 2), atol=1.0)


def _replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("which", "lineno", "text", "message"),
    [
        ("face_tid_mid", 3, "3.png 7", "expected 3 fields"),
        ("face_tid_mid", 2, "2.png seven 1", "field 2"),
        ("name_5pts_score", 4, "4.png 1 2 3", "expected 12 fields"),
        ("name_5pts_score", 5, "5.png " + " ".join(["1.0"] * 10) + " nan", "non-finite"),
        ("name_5pts_score", 2, "9.png " + " ".join(["1.0"] * 11), "'9.png'"),
        ("template_pair_label", 2, "7 12", "expected 3 fields"),
        ("template_pair_label", 3, "9 12 2", "label must be 0 or 1"),
        ("template_pair_label", 1, "7 x 1", "field 2"),
        ("template_pair_label", 3, "9 99 0", "template [9, 99]"),
    ],
)
def test_malformed_meta_names_file_and_line(
    tmp_path: Path, which: str, lineno: int, text: str, message: str
) -> None:
    root = _small_set(tmp_path)
    path = ijb_meta_paths(root, "IJBC")[which]
    _replace_line(path, lineno, text)
    with pytest.raises(IJBMetaError) as err:
        load_ijb_meta(root, "IJBC")
    assert f"{path}:{lineno}" in str(err.value) and message in str(err.value)


def test_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("1 2 1\n\n3 4 0\n\n5 6 3\n")
    with pytest.raises(IJBMetaError, match=r"pairs.txt:5: label must be 0 or 1"):
        read_template_pair_label(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="meta/"):
        load_ijb_meta(tmp_path, "IJBB")
    root = _small_set(tmp_path / "set")
    ijb_meta_paths(root, "IJBC")["template_pair_label"].write_text("\n")
    with pytest.raises(IJBMetaError, match="empty file"):
        load_ijb_meta(root, "IJBC")
    with pytest.raises(FileNotFoundError, match="ijbb_face_tid_mid.txt"):
        load_ijb_meta(root, "IJBB")


def test_face_count_mismatch(tmp_path: Path) -> None:
    root = _small_set(tmp_path)
    path = ijb_meta_paths(root, "IJBC")["name_5pts_score"]
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:5]))
    with pytest.raises(IJBMetaError, match="lists 5 faces"):
        load_ijb_meta(root, "IJBC")


def test_alignment_recovers_the_aligned_face(faces_mini: Path) -> None:
    """A real aligned face padded into a loose crop (and scaled) comes back to the template."""
    face = np.asarray(Image.open(next((faces_mini / "identities").rglob("*.jpg"))).convert("RGB"))
    loose = np.zeros((150, 140, 3), np.uint8)
    loose[20:132, 10:122] = face
    aligned, kp = align_loose_crop(loose, ARCFACE_TEMPLATE_112 + [10, 20])
    np.testing.assert_array_equal(aligned, face)
    np.testing.assert_allclose(kp, ARCFACE_TEMPLATE_112, atol=1e-6)
    big = np.asarray(Image.fromarray(face).resize((140, 140), Image.BILINEAR))
    loose = np.zeros((170, 160, 3), np.uint8)
    loose[15:155, 5:145] = big
    aligned, kp = align_loose_crop(loose, ARCFACE_TEMPLATE_112 * 1.25 + [5, 15])
    assert np.abs(aligned.astype(float) - face).mean() < 3.0
    np.testing.assert_allclose(kp, ARCFACE_TEMPLATE_112, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        align_loose_crop(loose, np.zeros((4, 2)))
