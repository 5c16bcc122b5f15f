"""`lafs align` and the dlib backend on real raw photos; resumability, reports, face policies."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")

from lafslib.cli import main  # noqa: E402
from lafslib.data.sources import open_dataset  # noqa: E402
from lafslib.io import read_image  # noqa: E402
from lafslib.landmarks.align import align_folder  # noqa: E402
from lafslib.landmarks.detectors import DlibDetector  # noqa: E402
from lafslib.landmarks.store import load_landmarks  # noqa: E402
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112  # noqa: E402


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_dlib_aligns_celeba_raw_mini(celeba_raw_mini: Path, tmp_path: Path) -> None:
    before = _digest(celeba_raw_mini)
    out = tmp_path / "aligned"
    code = main(["align", str(celeba_raw_mini), str(out), "--detector", "dlib", "--quiet"])
    assert code == 0
    assert _digest(celeba_raw_mini) == before  # inputs never modified
    report = json.loads((out / "align_report.json").read_text())
    assert report["photos"] == 80
    assert report["detection_rate"] >= 0.95
    assert len(report["no_face"]) + report["faces"] >= 80
    table = load_landmarks(out / "landmarks5.csv", num_points=5, image_size=112)
    assert len(load_landmarks(out / "landmarks68.csv", num_points=68)) == len(table)
    # eyes detected again on the aligned crops lie on the template
    detector = DlibDetector()
    errors = []
    for key in table:
        faces = detector.detect(read_image(out / key))
        if faces:
            eyes = max(faces, key=lambda f: f.area).five_points()[:2]
            errors.append(np.linalg.norm(eyes - ARCFACE_TEMPLATE_112[:2], axis=1).mean())
    assert len(errors) >= 0.9 * len(table)
    assert np.mean(errors) < 3.0, np.mean(errors)
    # the data layer reads the output with its landmarks
    ds = open_dataset(out)
    sample = ds.sample(0)
    assert sample["image"].shape == (112, 112, 3) and sample["landmarks"].shape == (5, 2)


def _photos(celeba_raw_mini: Path, root: Path) -> None:
    for src in sorted(celeba_raw_mini.glob("*/*.jpg"))[:3]:
        dst = root / "people" / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    Image.fromarray(np.full((120, 90, 3), 128, np.uint8)).save(root / "blank.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_align_reports_resumes_and_uses_workers(celeba_raw_mini: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _photos(celeba_raw_mini, src)
    first = align_folder(src, out, "dlib", workers=2)
    assert first.photos == 5 and first.faces == 3
    assert first.no_face == ["blank.png"]
    assert list(first.unreadable) == ["broken.jpg"]
    saved = json.loads((out / "align_report.json").read_text())
    assert saved["no_face"] == ["blank.png"] and "broken.jpg" in saved["unreadable"]
    crops = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert len(crops) == 3 and all(c.startswith("people/") for c in crops)
    sidecar = (out / "landmarks5.csv").read_text()
    # a rerun skips everything; a crash after one photo (cut journal) redoes the rest
    again = align_folder(src, out, "dlib")
    assert again.skipped_done == 5 and again.faces == 3
    # a crash after the first photo: later crops were begun (intent lines) but not finished
    journal_path = out / ".lafs_align" / "parts" / "0-0-of-1" / "journal.jsonl"
    lines = journal_path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if '"writing"' not in line)
    later = [line for line in lines[first + 1 :] if '"writing"' in line]
    journal_path.write_text("\n".join([*lines[: first + 1], *later, lines[-1][:10]]))
    resumed = align_folder(src, out, "dlib")
    assert resumed.skipped_done == 1
    assert (out / "landmarks5.csv").read_text() == sidecar


def test_face_policy_all_keeps_every_face(celeba_raw_mini: Path, tmp_path: Path) -> None:
    a, b = sorted(celeba_raw_mini.glob("*/*.jpg"))[:2]
    ia, ib = read_image(a), read_image(b)
    h = max(ia.shape[0], ib.shape[0])
    canvas = np.zeros((h, ia.shape[1] + ib.shape[1], 3), np.uint8)
    canvas[: ia.shape[0], : ia.shape[1]] = ia
    canvas[: ib.shape[0], ia.shape[1] :] = ib
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(canvas).save(src / "two.png")
    largest = align_folder(src, tmp_path / "largest", "dlib", policy="largest")
    every = align_folder(src, tmp_path / "all", "dlib", policy="all")
    assert largest.faces == 1 and every.faces == 2
    assert sorted(load_landmarks(tmp_path / "all" / "landmarks5.csv")) == [
        "two.png",
        "two_face1.png",
    ]


def test_align_refuses_output_inside_source(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match="outside the source"):
        align_folder(tmp_path / "src", tmp_path / "src" / "out", "dlib")
