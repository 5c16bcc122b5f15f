"""`lafs align` never writes inside its source folder: overlapping folders, symbolic links."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lafslib.cli import main
from lafslib.data.synthetic import render_face
from lafslib.errors import PathConflictError
from lafslib.landmarks import align
from lafslib.landmarks.detectors import Face, FaceDetector


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _photo(path: Path, identity: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_face(identity, 0, 160)["image"]).save(path)


class _EveryPhotoHasAFace(FaceDetector):
    name = "fake"

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        five = render_face(0, 0, image.shape[0])["landmarks5"].astype(np.float64)
        box = np.concatenate([five.min(0) - 20, five.max(0) + 20])
        return [Face(box, 1.0, five, "arcface5")]


@pytest.fixture
def fake_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(align, "create_detector", lambda name, **kw: _EveryPhotoHasAFace())


@pytest.mark.parametrize("layout", ["dst_is_parent", "dst_inside", "same"])
def test_overlapping_folders_are_refused_before_any_write(
    tmp_path: Path, layout: str, fake_detector: None, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "raw"
    _photo(src / "x.jpg", 0)
    _photo(src / "raw" / "x.jpg", 1)  # the issue: its crop went to DST/raw/x.jpg == SRC/x.jpg
    dst = {"dst_is_parent": tmp_path, "dst_inside": src / "out", "same": src}[layout]
    before, listing = _digest(tmp_path), sorted(tmp_path.rglob("*"))
    assert main(["align", str(src), str(dst), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "overlap" in err and str(src) in err and err.count("\n") == 1
    assert _digest(tmp_path) == before and sorted(tmp_path.rglob("*")) == listing


def test_an_output_that_resolves_into_the_source_is_refused(
    tmp_path: Path, fake_detector: None
) -> None:
    src, dst = tmp_path / "raw", tmp_path / "aligned"
    _photo(src / "a" / "x.jpg")
    dst.mkdir()
    (dst / "a").symlink_to(src / "a")  # DST/a/x.jpg is SRC/a/x.jpg
    before = _digest(src)
    with pytest.raises(PathConflictError, match="inside the source folder"):
        align.align_folder(src, dst, "fake")
    assert _digest(src) == before


def test_aligning_into_a_sibling_folder_works(tmp_path: Path, fake_detector: None) -> None:
    src, dst = tmp_path / "raw", tmp_path / "raw_aligned"  # a name that starts like SRC
    _photo(src / "raw" / "x.jpg")
    before = _digest(src)
    report = align.align_folder(src, dst, "fake")
    assert report.faces == 1 and (dst / "raw" / "x.jpg").is_file()
    assert _digest(src) == before
