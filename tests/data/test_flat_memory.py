"""Pools of millions at flat memory: the RecordIO index, the labels, the landmark keys and the
folder listings are numpy arrays (no Python object per record), and reading through them gives
what the plain per-record reading gives on real faces."""

from __future__ import annotations

import csv
import gc
import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lafslib.data import ImageFolderDataset, RecordIODataset, open_dataset, pack_folder
from lafslib.data.recordio import IRHeader, RecordIndex, RecordReader, RecordWriter, pack_record
from lafslib.errors import DataError
from lafslib.io import listing_cache
from lafslib.io.listing_cache import PathArray, cached_listing, listing_cache_path
from lafslib.landmarks import store
from lafslib.landmarks.store import LandmarkFileError, LandmarkTable, load_landmarks

_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def reachable(obj: object) -> int:
    """How many Python objects ``obj`` reaches (classes, modules and functions not counted)."""
    seen, stack = set(), [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, _SKIP):
            continue
        seen.add(id(o))
        stack += gc.get_referents(o)
    return len(seen)


def _pool(folder: Path, n: int, jpeg: bytes, per_identity: int = 10) -> Path:
    """An insightface-layout .rec of ``n`` copies of ``jpeg`` and its record-keyed sidecar."""
    ids = -(-n // per_identity)
    with RecordWriter(folder / "pool.rec") as w:
        w.write(0, pack_record(IRHeader(2, np.array([n + 1, n + 1 + ids]))))
        for key in range(1, n + 1):
            w.write(key, pack_record(IRHeader(0, float((key - 1) // per_identity)), jpeg))
        for c in range(ids):
            rng = np.array([1 + c * per_identity, min(n, (c + 1) * per_identity) + 1])
            w.write(n + 1 + c, pack_record(IRHeader(2, rng)))
    pts = np.tile(np.float32([[38, 51], [73, 51], [56, 71], [41, 92], [70, 92]]), (n, 1, 1))
    store.save_landmarks(folder / "landmarks5.npz", np.arange(1, n + 1), pts)
    return folder / "pool.rec"


def test_a_rec_pool_holds_no_python_object_per_record(faces_mini: Path, tmp_path: Path) -> None:
    jpeg = next((faces_mini / "identities").rglob("*.jpg")).read_bytes()
    counts = {}
    for n in (100, 3000):
        (tmp_path / str(n)).mkdir()
        ds = open_dataset(_pool(tmp_path / str(n), n, jpeg))
        assert isinstance(ds, RecordIODataset) and len(ds) == n
        assert isinstance(ds.labels, np.ndarray) and ds.num_classes == n // 10
        assert isinstance(ds.reader.offsets, RecordIndex) and ds.landmarks is not None
        assert ds.sample(n - 1)["label"] == (n - 1) // 10
        counts[n] = reachable(ds)
    assert counts[3000] <= counts[100] + 5, counts  # a dict of the .idx alone adds 2 x 2900


def test_landmark_tables_and_listings_hold_no_object_per_key(tmp_path: Path) -> None:
    for keys in (
        lambda n: list(range(5, 5 + 3 * n, 3)),
        lambda n: [f"id{i}/{i}.jpg" for i in range(n)],
    ):
        sizes = [
            reachable(LandmarkTable(keys(n), np.zeros((n, 5, 2), np.float32))) for n in (10, 5000)
        ]
        assert sizes[1] <= sizes[0] + 2, sizes
    small, large = (PathArray.from_strings(f"a/{i}.jpg" for i in range(n)) for n in (10, 5000))
    assert reachable(large) == reachable(small) and large[4321] == "a/4321.jpg"


def test_rec_reading_matches_the_idx_and_the_list_on_real_faces(
    faces_mini: Path, tmp_path: Path
) -> None:
    summary = pack_folder(faces_mini / "identities", tmp_path / "f.rec", progress=False)
    reader = RecordReader(tmp_path / "f.rec")
    lines = Path(summary["idx"]).read_text().splitlines()
    plain = {int(k): int(v) for k, v in (line.split("\t") for line in lines)}
    assert dict(reader.offsets.items()) == plain and list(reader.keys) == sorted(plain)
    ds = RecordIODataset(tmp_path / "f.rec")
    with open(summary["list"]) as f:
        listed = list(csv.DictReader(f))
    assert ds.labels.tolist() == [int(r["label"]) for r in listed]
    for i in (0, 37, 99):
        assert ds.sample(i)["path"] == f"rec:{listed[i]['key']}"
        assert ds.sample(i)["label"] == int(listed[i]["label"])


def test_an_unsorted_idx_with_a_repeated_key_reads_like_a_dict(tmp_path: Path) -> None:
    payloads = {k: pack_record(IRHeader(0, float(k)), bytes([k]) * 9) for k in (7, 3, 11, 5)}
    with RecordWriter(tmp_path / "u.rec") as w:
        for k, p in payloads.items():
            w.write(k, p)
    idx = tmp_path / "u.idx"  # reordered by hand, key 3 listed twice: the last line wins
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join([lines[2], "3\t999999", lines[0], lines[1], lines[3]]) + "\n")
    reader = RecordReader(tmp_path / "u.rec")
    assert list(reader.keys) == [3, 5, 7, 11] and 4 not in reader.offsets
    for k, p in payloads.items():
        assert reader.read(k) == p
    with pytest.raises(KeyError, match="no record with key 4"):
        reader.read(4)
    idx.write_text("0\t8\nzero\t9\n")
    with pytest.raises(DataError, match=r"u\.idx: line 2: expected 'key<TAB>offset'"):
        RecordReader(tmp_path / "u.rec")


def test_a_flat_rec_reads_each_label_from_its_header(tmp_path: Path) -> None:
    with RecordWriter(tmp_path / "flat.rec") as w:
        for k in range(6):
            labels = float(k * 3) if k % 2 else np.array([k * 3, 0.5], np.float32)
            w.write(10 + 2 * k, pack_record(IRHeader(0 if k % 2 else 2, labels), b"x"))
    reader = RecordReader(tmp_path / "flat.rec")
    assert isinstance(reader.keys, np.ndarray)  # 10, 12, ...: not consecutive
    found = reader.header_labels(reader.keys)
    assert found.tolist() == [0, 3, 6, 9, 12, 15]


def test_the_celeba_sidecar_looks_up_like_its_csv_rows(celeba_112: Path) -> None:
    table = load_landmarks(celeba_112 / "landmarks5.csv", num_points=5, image_size=112)
    with open(celeba_112 / "landmarks5.csv") as f:
        rows = {r[0]: np.float32(r[1:]).reshape(5, 2) for r in list(csv.reader(f))[1:]}
    assert len(table) == len(rows) and list(table) == list(rows)
    for key in list(rows)[::97]:
        np.testing.assert_array_equal(table[key], rows[key])
        assert table.row(key) == list(rows).index(key)
    keys = np.array([k.encode() for k in rows] + [b"nobody/0.jpg"])
    assert (table.rows(keys)[:-1] == np.arange(len(rows))).all() and table.rows(keys)[-1] == -1
    assert "07201/001085.jpg" in table and "./07201/001085.jpg" in table and 7201 not in table


def test_large_npz_points_are_memory_mapped_and_shared_by_workers(
    tmp_path: Path, faces_mini: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MMAP_MIN_BYTES", 1)
    rng = np.random.default_rng(0)
    pts = rng.uniform(20, 90, (300, 5, 2)).astype(np.float32)
    order = rng.permutation(300)
    path = store.save_landmarks(tmp_path / "lm.npz", order * 2 + 1, pts)  # unsorted, gapped
    table = load_landmarks(path, num_points=5)
    assert isinstance(table.points, np.memmap)
    for i in (0, 150, 299):
        np.testing.assert_array_equal(table[int(order[i]) * 2 + 1], pts[i])
    assert 2 not in table and "1" not in table
    jpeg = next((faces_mini / "identities").rglob("*.jpg")).read_bytes()
    rec = _pool(tmp_path, 40, jpeg)
    ds = RecordIODataset(rec, landmarks=tmp_path / "landmarks5.npz",
                         transform=lambda s: (s["index"], s["landmarks"]))  # fmt: skip
    assert isinstance(ds.landmarks.points, np.memmap)
    serial = torch.stack([torch.from_numpy(ds[i][1]) for i in range(40)])
    parallel = torch.cat([lm for _, lm in DataLoader(ds, batch_size=8, num_workers=2)])
    torch.testing.assert_close(parallel, serial)


def test_a_repeated_landmark_key_is_an_error(tmp_path: Path) -> None:
    path = store.save_landmarks(tmp_path / "d.npz", [4, 2, 4], np.zeros((3, 5, 2), np.float32))
    with pytest.raises(LandmarkFileError, match=r"d\.npz: duplicate keys"):
        load_landmarks(path)


def _files(root: Path, n: int) -> None:
    for i in range(n):
        (root / f"id{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"id{i % 3}" / f"{i}.jpg").write_bytes(b"")


def test_a_large_folder_listing_is_cached_beside_it_until_a_folder_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "faces"
    _files(root, 30)
    assert list(cached_listing(root, min_files=31)) == listing_cache.list_images(root)
    assert not listing_cache_path(root).exists()  # small folders are never cached
    listed = list(cached_listing(root, min_files=30))
    assert listing_cache_path(root) == tmp_path / "faces.lafs-listing.npz"
    assert listing_cache_path(root).is_file()

    def no_walk(folder: object) -> list[str]:
        raise AssertionError("listed again")

    real = listing_cache.list_images
    monkeypatch.setattr(listing_cache, "list_images", no_walk)
    cached = cached_listing(root, min_files=30)
    assert isinstance(cached.ends, np.memmap) and list(cached) == listed
    (root / "id1" / "new.jpg").write_bytes(b"")
    os.utime(root / "id1", ns=(0, 10**9))  # a coarse clock must not hide the change
    monkeypatch.setattr(listing_cache, "list_images", real)
    assert "id1/new.jpg" in list(cached_listing(root, min_files=30))
    (root / "id2" / "deeper").mkdir()
    (root / "id2" / "deeper" / "x.png").write_bytes(b"")
    assert "id2/deeper/x.png" in list(cached_listing(root, min_files=30))


def test_a_labelled_folder_keeps_its_labels_and_finds_missing_landmarks(
    faces_mini: Path, tmp_path: Path
) -> None:
    ds = ImageFolderDataset(faces_mini / "identities", labelled=True)
    names = sorted(p.name for p in (faces_mini / "identities").iterdir() if p.is_dir())
    assert list(ds.classes) == names and ds.files[7].startswith(names[1] + "/")
    assert [ds.sample(i)["label"] for i in (0, 5, 99)] == [0, 1, 19]
    keys = [ds.files[i] for i in range(len(ds)) if i != 42]
    store.save_landmarks(tmp_path / "lm.csv", keys, np.full((len(keys), 5, 2), 50, np.float32))
    with pytest.raises(DataError, match=rf"no landmarks for 1 of 100 images .*'{ds.files[42]}'"):
        ImageFolderDataset(faces_mini / "identities", labelled=True, landmarks=tmp_path / "lm.csv")


def _freeze_count(sample: dict) -> int:
    return gc.get_freeze_count()


def test_workers_freeze_the_objects_they_inherit(faces_mini: Path) -> None:
    ds = ImageFolderDataset(faces_mini / "identities", labelled=True, transform=_freeze_count)
    in_main = gc.get_freeze_count()
    assert ds[0] == in_main  # the main process is left alone
    counts = torch.cat(list(DataLoader(ds, batch_size=4, num_workers=1))).tolist()
    assert len(counts) == 100 and min(counts) > in_main  # the worker froze its inheritance
