"""`lafs align --shard K/N` + `lafs align-merge` equal one run byte for byte; duplicates."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lafslib.cli import main
from lafslib.landmarks.align import align_folder, merge_alignment
from lafslib.landmarks.align_state import Shard, parse_shard, photo_in_shard, shard_from_env
from lafslib.landmarks.duplicates import hamming, near_groups, perceptual_hash
from lafslib.landmarks.store import load_landmarks


def _dataset(root: Path) -> dict[str, str]:
    """Every file of an aligned folder but its state folder."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".lafs_align" not in p.parts
    }


@pytest.fixture
def photos(celeba_raw_mini: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for photo in sorted(celeba_raw_mini.glob("*/*.jpg"))[:10]:
        (src / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, src / photo.parent.name / photo.name)
    Image.new("RGB", (90, 120), (128, 128, 128)).save(src / "x.png")
    (src / "broken.jpg").write_bytes(b"not an image")
    return src


def test_three_shards_merged_equal_one_run_byte_for_byte(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, many = tmp_path / "one", tmp_path / "many"
    assert main(["align", str(photos), str(one), "--faces", "all", "--quiet"]) == 0
    capsys.readouterr()
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert shard_from_env(env) == Shard(1, 3)
    counts = []
    for k in (2, 0):
        assert main(["align", str(photos), str(many), "--faces", "all", "--shard", f"{k}/3"]) == 0
        counts.append(json.loads(capsys.readouterr().out.split("\nshard")[0])["photos"])
    assert not (many / "align_report.json").exists()  # nothing merged before every shard
    assert main(["align-merge", str(many)]) == 2
    assert "shard(s) 1/3 have not finished" in capsys.readouterr().err
    # a shard with other settings is refused before any work
    assert main(["align", str(photos), str(many), "--shard", "1/3", "--quiet"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["align", str(photos), str(many), "--faces", "all", "--shard", "1/3"]) == 0
    counts.append(json.loads(capsys.readouterr().out.split("\nshard")[0])["photos"])
    assert sum(counts) == 12 and min(counts) > 0
    assert main(["align-merge", str(many)]) == 0
    assert _dataset(many) == _dataset(one)
    report = json.loads((one / "align_report.json").read_text())
    assert report["photos"] == 12 and report["no_face"] == ["x.png"]
    assert list(report["unreadable"]) == ["broken.jpg"]


def test_shards_partition_every_photo_once() -> None:
    names = [f"d{i % 7}/p{i}.jpg" for i in range(500)]
    owners = [[k for k in range(4) if photo_in_shard(n, Shard(k, 4))] for n in names]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(o == [k] for o in owners) for k in range(4)]
    assert min(sizes) > 90  # balanced
    with pytest.raises(ValueError, match="K/N"):
        parse_shard("3")
    with pytest.raises(ValueError, match="0..N-1"):
        parse_shard("4/4")
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    assert shard_from_env({}) is None


def _reencoded(path: Path, out: Path) -> None:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    buf = io.BytesIO()
    image.resize((int(w * 0.9), int(h * 0.9))).resize((w, h)).save(buf, "JPEG", quality=70)
    out.write_bytes(buf.getvalue())


def test_planted_duplicates_are_found_and_left_out_on_request(photos: Path, tmp_path: Path) -> None:
    originals = sorted(photos.glob("*/*.jpg"))
    shutil.copy(originals[0], photos / "copy_renamed.jpg")  # exact: same pixels
    Image.open(originals[1]).save(photos / "copy_lossless.png")  # exact: other file format
    _reencoded(originals[2], photos / "copy_reencoded.jpg")  # near
    _reencoded(originals[3], photos / "copy_reencoded2.jpg")  # near
    out = tmp_path / "out"
    align_folder(photos, out)
    report = json.loads((out / "align_report.json").read_text())
    rel = [p.relative_to(photos).as_posix() for p in originals]
    exact = report["duplicates"]["exact"]
    assert sorted(["copy_renamed.jpg", rel[0]]) in exact
    assert sorted(["copy_lossless.png", rel[1]]) in exact
    near = report["duplicates"]["near"]
    assert sorted(["copy_reencoded.jpg", rel[2]]) in near
    assert sorted(["copy_reencoded2.jpg", rel[3]]) in near
    assert len(exact) == 2 and len(near) == 4  # the exact pairs are near too; none else
    assert report["duplicates"]["left_out"] == [] and report["faces"] == 14
    # left out on request: the later copy leaves the dataset (kept under .lafs_align)
    dropped = merge_alignment(out, "near")
    assert dropped["faces"] == 10 and len(dropped["duplicates"]["left_out"]) == 4
    table = load_landmarks(out / "landmarks5.csv")
    assert "copy_renamed.jpg" not in table and rel[0] in table
    assert not (out / "copy_renamed.jpg").exists()
    assert (out / ".lafs_align" / "left_out" / "copy_renamed.jpg").is_file()
    # and back on a merge without the request
    assert merge_alignment(out)["faces"] == 14 and (out / "copy_renamed.jpg").is_file()


def test_near_search_misses_no_pair_within_the_distance() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    bits = rng.random((400, 256)) < 0.5
    for i in range(0, 40, 2):  # plant pairs at distances 0..12
        bits[i + 1] = bits[i]
        flip = rng.choice(256, size=i // 4 + (i % 3), replace=False)
        bits[i + 1, flip] ^= True
    hashes = [bytes(np.packbits(b)).hex() for b in bits]
    keys = [f"{i:03d}" for i in range(400)]
    groups = near_groups(keys, hashes, 12)
    brute = sorted(
        [keys[i], keys[j]]
        for i in range(400)
        for j in range(i + 1, 400)
        if hamming(hashes[i], hashes[j]) <= 12
    )
    assert groups == brute and len(groups) == 20


def test_perceptual_hash_separates_faces_and_keeps_reencodes(celeba_raw_mini: Path) -> None:
    import numpy as np

    from lafslib.io import read_image

    a, b = (read_image(p) for p in sorted(celeba_raw_mini.glob("*/*.jpg"))[:2])
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=60)
    again = np.asarray(Image.open(buf).convert("RGB"))
    assert hamming(perceptual_hash(a), perceptual_hash(again)) <= 6
    assert hamming(perceptual_hash(a), perceptual_hash(b)) > 40
