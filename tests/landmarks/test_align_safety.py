"""`lafs align` never loses or corrupts data: sources recorded, foreign files kept, sidecars
complete, EXIF orientation, symbolic-link loops, the sidecar detector, bad photos listed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lafslib.cli import main
from lafslib.io import read_image
from lafslib.landmarks.align import align_folder
from lafslib.landmarks.detectors import YuNetDetector
from lafslib.landmarks.store import load_landmarks, save_landmarks


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _copy(celeba_raw_mini: Path, dst: Path, start: int, count: int) -> list[Path]:
    out = []
    for photo in sorted(celeba_raw_mini.glob("*/*.jpg"))[start : start + count]:
        target = dst / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, target)
        out.append(target)
    return out


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def test_another_source_is_refused_or_added_keeping_every_row(
    celeba_raw_mini: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    taken = _copy(celeba_raw_mini, first, 0, 4)[0].relative_to(first)
    _copy(celeba_raw_mini, second, 4, 2)
    (second / taken).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sorted(celeba_raw_mini.glob("*/*.jpg"))[-1], second / taken)  # another face
    assert main(["align", str(first), str(out), "--quiet"]) == 0
    rows = _rows(out / "landmarks5.csv")
    crops = {k: v for k, v in _digest(out).items() if k.endswith(".jpg")}
    assert len(rows) == 4 and len(crops) == 4
    capsys.readouterr()
    # another source: one line, nothing touched
    assert main(["align", str(second), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--add" in err and str(first.resolve()) in err
    assert {k: v for k, v in _digest(out).items() if k.endswith(".jpg")} == crops
    # --add keeps every earlier row and crop; the clashing name gets a file of its own
    assert main(["align", str(second), str(out), "--add", "--quiet"]) == 0
    after = _rows(out / "landmarks5.csv")
    assert set(rows) <= set(after) and len(after) == 4 + 3
    assert all(_digest(out)[name] == digest for name, digest in crops.items())
    renamed = taken.with_name(f"{taken.stem}~1.jpg").as_posix()
    assert (out / renamed).is_file() and any(r.startswith(renamed + ",") for r in after)
    report = json.loads((out / "align_report.json").read_text())
    assert [s["path"] for s in report["sources"]] == [str(first.resolve()), str(second.resolve())]


def test_files_alignment_did_not_write_are_never_replaced(
    celeba_raw_mini: Path, tmp_path: Path
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    photos = _copy(celeba_raw_mini, src, 0, 3)
    mine = out / photos[0].relative_to(src)
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    report = align_folder(src, out)
    assert mine.read_bytes() == b"the user's own file"
    rel = photos[0].relative_to(src).as_posix()
    assert list(report.conflicts) == [rel] and report.faces == 2
    saved = json.loads((out / "align_report.json").read_text())
    assert rel in saved["conflicts"] and "not written by lafs align" in saved["conflicts"][rel]
    assert rel not in load_landmarks(out / "landmarks5.csv")


def test_a_folder_with_a_foreign_sidecar_is_refused(tmp_path: Path, celeba_raw_mini: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _copy(celeba_raw_mini, src, 0, 1)
    out.mkdir()
    (out / "landmarks5.csv").write_text("path,x0\n")
    with pytest.raises(ValueError, match="no record of the alignment"):
        align_folder(src, out)
    assert (out / "landmarks5.csv").read_text() == "path,x0\n"


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied_before_detection(
    celeba_raw_mini: Path, tmp_path: Path, orientation: int
) -> None:
    photo = sorted(celeba_raw_mini.glob("*/*.jpg"))[0]
    upright = read_image(photo)
    # the camera stored the pixels turned; the tag says how to show them upright
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}.get(
        orientation, Image.Transpose.ROTATE_180
    )
    src = tmp_path / "src"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(upright).transpose(stored).save(src / "phone.jpg", quality=98, exif=exif)
    shutil.copy(photo, src / "plain.jpg")
    report = align_folder(src, tmp_path / "out")
    assert report.faces == 2 and not report.no_face
    table = load_landmarks(tmp_path / "out" / "landmarks5.csv")
    assert np.abs(table["phone.jpg"] - table["plain.jpg"]).max() < 1.5
    a = read_image(tmp_path / "out" / "phone.jpg").astype(float)
    b = read_image(tmp_path / "out" / "plain.jpg").astype(float)
    assert np.abs(a - b).mean() < 6.0


def test_symlink_loops_are_followed_once(celeba_raw_mini: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _copy(celeba_raw_mini, src, 0, 3)
    (src / "loop").symlink_to(".")
    (src / "07201" / "again").symlink_to("..")
    (src / "alias.jpg").symlink_to(next((src / "07201").glob("*.jpg")))
    report = align_folder(src, tmp_path / "out")
    assert report.photos == 3 and report.faces == 3


def test_sidecar_detector_aligns_raw_photos(celeba_raw_mini: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    photos = _copy(celeba_raw_mini, src, 0, 3)
    detector = YuNetDetector()
    keys = [p.relative_to(src).as_posix() for p in photos]
    points = [detector.detect(read_image(p))[0].landmarks for p in photos]
    save_landmarks(tmp_path / "raw5.csv", keys, np.asarray(points))
    args = ["--detector", "sidecar", "--landmarks-file", str(tmp_path / "raw5.csv"), "--quiet"]
    assert main(["align", str(src), str(tmp_path / "side"), *args]) == 0
    assert main(["align", str(src), str(tmp_path / "yunet"), "--quiet"]) == 0
    by_side = load_landmarks(tmp_path / "side" / "landmarks5.csv")
    by_yunet = load_landmarks(tmp_path / "yunet" / "landmarks5.csv")
    assert sorted(by_side) == sorted(keys)
    for key in keys:
        assert np.abs(by_side[key] - by_yunet[key]).max() < 0.01


def test_bad_photos_are_counted_and_listed_and_sources_untouched(
    celeba_raw_mini: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _copy(celeba_raw_mini, src, 0, 2)
    Image.fromarray(np.full((120, 90, 3), 128, np.uint8)).save(src / "blank.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.jpg").write_bytes(b"")
    small = read_image(sorted(celeba_raw_mini.glob("*/*.jpg"))[2])
    Image.fromarray(small).resize((78, 100)).save(src / "small.png")  # a face ~25 px wide
    before = _digest(src)
    report = align_folder(src, tmp_path / "out", min_face=60)
    assert _digest(src) == before
    assert report.faces == 2 and report.no_face == ["blank.png"]
    assert report.too_small == ["small.png"]
    assert sorted(report.unreadable) == ["broken.jpg", "empty.jpg"]
    saved = json.loads((tmp_path / "out" / "align_report.json").read_text())
    assert saved["too_small"] == ["small.png"] and saved["photos"] == 6


def test_names_never_collide(tmp_path: Path, celeba_raw_mini: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    image = read_image(sorted(celeba_raw_mini.glob("*/*.jpg"))[0])
    Image.fromarray(image).save(src / "a.bmp")
    Image.fromarray(image).save(src / "a.png")
    report = align_folder(src, tmp_path / "out")
    assert report.faces == 2
    assert sorted(load_landmarks(tmp_path / "out" / "landmarks5.csv")) == ["a.png", "a~1.png"]


def test_damaged_bundled_model_is_refused(tmp_path: Path, monkeypatch) -> None:
    from lafslib.landmarks.detectors import yunet

    bad = tmp_path / "yunet.onnx"
    data = bytearray(yunet.yunet_model_path().read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(yunet, "yunet_model_path", lambda: bad)
    with pytest.raises(ValueError, match="sha256"):
        YuNetDetector()


def test_the_model_ships_in_the_package() -> None:
    from lafslib.landmarks.detectors import yunet

    path = yunet.yunet_model_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == yunet.YUNET_SHA256
    assert (path.parent / "LICENSE-yunet.txt").read_text().count("Apache License") >= 1
    assert os.access(path, os.R_OK)


def test_a_full_disk_is_one_line_and_the_rerun_completes(
    celeba_raw_mini: Path, tmp_path: Path, small_disk, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    _copy(celeba_raw_mini, src, 0, 12)
    disk = small_disk(256 * 1024)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (256 * 1024 - 96 * 1024))  # room for a few crops only
    out = disk / "aligned"
    assert main(["align", str(src), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err
    done = {p.name for p in out.rglob("*.jpg")}
    assert done  # what was written before stays
    filler.unlink()
    assert main(["align", str(src), str(out), "--quiet"]) == 0
    table = load_landmarks(out / "landmarks5.csv")
    assert len(table) == 12 and {Path(k).name for k in table} >= done
    assert all(read_image(out / k).shape == (112, 112, 3) for k in table)
