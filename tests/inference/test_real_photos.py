"""The real MobileFaceNet end to end on real photos: ``lafs verify``, ``lafs embed`` and
``lafs search`` (skipped without ../shared, failed under LAFS_REQUIRE_TEST_DATA=1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lafslib.cli import main
from lafslib.inference.store import load_embeddings

# MobileFaceNet's similarity threshold at FAR=1e-3 on the 6,000 LFW pairs, no flip test, as
# report.json records it ('lafs eval --no-flip' on ../shared/data/lfw/lfw.bin; BENCHMARKS.md,
# faceembedder section): given as a number, as the 3 minutes of that evaluation are too long here.
LFW_THRESHOLD_AT_1E3 = "0.3134"


@pytest.fixture(scope="module")
def mfn(mobilefacenet_ms1m: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mfn") / "export"
    assert main(["convert", str(mobilefacenet_ms1m), str(out)]) == 0
    return out


def _verify(mfn: Path, a: Path, b: Path, capsys) -> str:
    argv = ["verify", str(a), str(b), "--model", str(mfn), "--threshold", LFW_THRESHOLD_AT_1E3]
    assert main(argv) == 0
    return capsys.readouterr().out


def test_verify_tells_one_person_from_two(mfn: Path, celeba_raw_mini: Path, capsys) -> None:
    a = celeba_raw_mini / "07201" / "001085.jpg"
    same = _verify(mfn, a, celeba_raw_mini / "07201" / "007710.jpg", capsys)
    assert "decision: same person" in same, same
    assert float(re.search(r"similarity: ([-\d.]+)", same).group(1)) > 0.6
    assert re.search(r"001085.jpg: face at \(\d+, \d+, \d+, \d+\), score 0\.\d+", same)
    assert f"threshold: {float(LFW_THRESHOLD_AT_1E3):.4f} (given)" in same
    other = _verify(mfn, a, celeba_raw_mini / "07231" / "007053.jpg", capsys)
    assert "decision: different people" in other, other
    assert float(re.search(r"similarity: ([-\d.]+)", other).group(1)) < 0.3


@pytest.mark.slow
def test_embed_finds_a_face_in_every_raw_photo(mfn: Path, celeba_raw_mini: Path, tmp_path) -> None:
    out = tmp_path / "celeba.npy"
    argv = ["embed", str(celeba_raw_mini), str(out), "--model", str(mfn), "--quiet"]
    assert main([*argv, "--workers", "2", "--max-faces", "1"]) == 0
    emb = load_embeddings(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["photos"] == 80 and meta["no_face"] == [] and meta["unreadable"] == {}
    assert len(emb) == 80 and not meta["aligned"] and meta["detector"] == "yunet"
    assert np.all(emb.scores > 0.7) and np.all(emb.boxes[:, 2] > emb.boxes[:, 0])
    # the 5 points lie inside their box, in ArcFace order (image-left eye left of the right one)
    inside = (emb.landmarks >= emb.boxes[:, None, :2] - 2) & (
        emb.landmarks <= emb.boxes[:, None, 2:] + 2
    )
    assert inside.all() and np.all(emb.landmarks[:, 0, 0] < emb.landmarks[:, 1, 0])


def test_search_of_lfw_faces_finds_each_identity_first(
    mfn: Path, faces_mini: Path, tmp_path, capsys
):
    out = tmp_path / "lfw.npy"
    src = faces_mini / "identities"
    assert main(["embed", str(src), str(out), "--model", str(mfn), "--quiet"]) == 0
    assert "(aligned crops)" in capsys.readouterr().out  # 112x112 crops: no detection
    assert main(["search", str(out), str(out), "-k", "3", "--out", str(tmp_path / "m.csv")]) == 0
    printed = capsys.readouterr().out
    assert "own row left out" in printed
    hits, total = map(int, re.search(r"match: (\d+)/(\d+)", printed).groups())
    assert total == 100 and hits == 100, printed
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert len(rows) == 1 + 300
    for row in rows[1::3]:  # rank 1 of each probe: another photo of the same person
        probe, _, rank, match, _, _ = row.split(",")
        assert rank == "1" and probe != match and probe.split("/")[0] == match.split("/")[0]
