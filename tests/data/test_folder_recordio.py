"""Image folders and RecordIO on real faces (faces-mini); pack round trip; worker safety."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lafslib.cli import main
from lafslib.data import ImageFolderDataset, RecordIODataset, open_dataset, pack_folder
from lafslib.data.recordio import IRHeader, RecordReader, RecordWriter, pack_record, unpack_record
from lafslib.io import BadImageError
from lafslib.landmarks.store import LandmarkFileError


def test_labelled_folder(faces_mini: Path) -> None:
    ds = ImageFolderDataset(faces_mini / "identities", labelled=True)
    assert len(ds) == 100 and ds.num_classes == 20
    assert ds.labels.tolist() == [i // 5 for i in range(100)]
    s = ds[7]
    assert s["image"].shape == (112, 112, 3) and s["label"] == 1
    assert s["path"].startswith(ds.classes[1] + "/")


def test_unlabelled_tree(faces_mini: Path) -> None:
    ds = ImageFolderDataset(faces_mini, labelled=False)
    assert len(ds) >= 200  # identities/ and pairs_images/ trees
    assert set(ds.labels) == {-1} and ds[0]["label"] == -1


def test_landmark_sidecar_attached(celeba_112: Path) -> None:
    ds = open_dataset(celeba_112 / "images", labelled=True)
    assert ds.landmarks is not None and ds.landmarks.num_points == 5
    s = ds[3]
    assert s["landmarks"].shape == (5, 2)
    assert 20 < s["landmarks"][0, 0] < 50 and s["landmarks"][0, 0] < s["landmarks"][1, 0]


def test_pack_roundtrip_identity_labels(faces_mini: Path, tmp_path: Path) -> None:
    out = tmp_path / "faces.rec"
    assert main(["data", "pack", str(faces_mini / "identities"), str(out), "--quiet"]) == 0
    folder = ImageFolderDataset(faces_mini / "identities", labelled=True)
    rec = RecordIODataset(out)
    assert len(rec) == len(folder) == 100
    assert rec.num_classes == 20 and rec.identity_range == (101, 121)
    assert rec.labels.tolist() == folder.labels.tolist()  # identity indices, not image indices
    for i in range(0, 100, 9):
        np.testing.assert_array_equal(rec[i]["image"], folder[i]["image"])
        assert rec[i]["label"] == folder[i]["label"]
    lines = (tmp_path / "faces.lst.csv").read_text().splitlines()
    assert lines[0] == "key,path,label" and len(lines) == 101
    assert lines[6].split(",")[2] == "1"


def test_flat_layout_multi_float_labels_and_magic_split(tmp_path: Path) -> None:
    rec = tmp_path / "flat.rec"
    jpeg = (Path(__file__).parent / "test_images.py").read_bytes()  # arbitrary payload bytes
    magic = struct.pack("<I", 0xCED7230A)
    payloads = []
    with RecordWriter(rec) as w:
        for k in range(4):
            body = jpeg[:50] + magic + bytes([k]) * 7 + magic + b"tail"
            hdr = IRHeader(0, float(k)) if k % 2 == 0 else IRHeader(3, np.array([k, 0.5, 2.0]))
            payloads.append(pack_record(hdr, body))
            w.write(k, payloads[-1])
    reader = RecordReader(rec)
    for k in range(4):
        assert reader.read(k) == payloads[k]
    h, body = unpack_record(reader.read(1))
    assert h.flag == 3 and np.allclose(h.label, [1, 0.5, 2.0]) and body.endswith(b"tail")
    (tmp_path / "flat.idx").unlink()
    assert RecordReader(rec).offsets == reader.offsets  # rebuilt by scanning


def test_flat_layout_dataset(faces_mini: Path, tmp_path: Path) -> None:
    files = sorted((faces_mini / "identities").rglob("*.jpg"))[:6]
    with RecordWriter(tmp_path / "f.rec") as w:
        for k, f in enumerate(files):
            w.write(k, pack_record(IRHeader(2, np.array([k // 2, 7.0])), f.read_bytes()))
    ds = RecordIODataset(tmp_path / "f.rec")
    assert ds.identity_range is None and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_dataloader_workers(faces_mini: Path, tmp_path: Path) -> None:
    pack_folder(faces_mini / "identities", tmp_path / "w.rec", progress=False)
    ds = RecordIODataset(tmp_path / "w.rec", transform=lambda s: (s["image"].mean(), s["label"]))
    serial = [ds[i] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=10, num_workers=2)
    means, labels = zip(*[(m, y) for m, y in loader])
    np.testing.assert_allclose(torch.cat(means).numpy(), [m for m, _ in serial], rtol=1e-6)
    assert torch.cat(labels).tolist() == [y for _, y in serial]


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.rec"):
        RecordIODataset(tmp_path / "nothere.rec")
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        open_dataset(tmp_path / "missing_dir")


def _corrupt_magic(rec: Path, key: int) -> None:
    offset = RecordReader(rec).offsets[key]
    data = bytearray(rec.read_bytes())
    data[offset : offset + 4] = b"\0\0\0\0"
    rec.write_bytes(bytes(data))


def test_a_corrupt_record_is_skipped_like_a_bad_image(tmp_path: Path, face_folder) -> None:
    face_folder(tmp_path / "src", identities=2, per_identity=4)
    pack_folder(tmp_path / "src", tmp_path / "f.rec", progress=False)
    _corrupt_magic(tmp_path / "f.rec", 5)  # image record 5: index 4
    ds = RecordIODataset(tmp_path / "f.rec")
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.warns(RuntimeWarning, match="corrupt record"):
        assert ds[4]["index"] == 5  # replaced by the next readable image
    assert ds.bad_images.count == 1
    with pytest.raises(BadImageError, match=r"f\.rec:5: corrupt record"):
        ds.sample(4)


def test_a_corrupt_header_in_a_flat_rec_leaves_that_record_out(tmp_path: Path) -> None:
    from lafslib.data.synthetic import render_face
    from lafslib.engine.finetune import few_shot_indices

    with RecordWriter(tmp_path / "flat.rec") as w:
        for k in range(4):
            png = io.BytesIO()
            Image.fromarray(render_face(k // 2, k)["image"]).save(png, format="PNG")
            w.write(k, pack_record(IRHeader(0, float(k // 2)), png.getvalue()))
    _corrupt_magic(tmp_path / "flat.rec", 1)
    with pytest.warns(RuntimeWarning, match="bad magic in record 1"):
        ds = RecordIODataset(tmp_path / "flat.rec")
    assert ds.labels.tolist() == [0, -1, 1, 1] and ds[1]["index"] == 2
    assert few_shot_indices(ds.labels, None, 1.0, 0) == ([0, 2, 3], {0: 0, 1: 1})
    with pytest.raises(ValueError, match="none of the 2 training images has an identity label"):
        few_shot_indices([-1, -1], None, 1.0, 0)


def test_data_info_check_fails_when_no_image_is_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp_path / "bad" / name).write_bytes(b"not an image")
    assert main(["data", "info", str(tmp_path / "bad"), "--check"]) == 2
    captured = capsys.readouterr()
    assert '"unreadable_count": 2' in captured.out
    assert captured.err.strip().endswith("none of the 2 images is readable")
    assert str(tmp_path / "bad") in captured.err


def _rewrite_sidecar(path: Path, points: int, row: int = 0, x: float | None = None) -> None:
    lines = path.read_text().splitlines()
    header = ["path"] + [f"{a}{i}" for i in range(points) for a in ("x", "y")]
    out = [",".join(header)]
    for i, line in enumerate(lines[1:]):
        fields = line.split(",")
        coords = (fields[1:] * 20)[: 2 * points]
        if i == row and x is not None:
            coords[0] = str(x)
        out.append(",".join([fields[0], *coords]))
    path.write_text("\n".join(out) + "\n")


def test_folder_landmarks_are_checked_against_the_image_size(tmp_path: Path, face_folder) -> None:
    face_folder(tmp_path, identities=1, per_identity=3)
    _rewrite_sidecar(tmp_path / "landmarks5.csv", 5, row=1, x=5000)
    with pytest.raises(LandmarkFileError, match=r"landmarks5\.csv: row 2 \(id0/1\.png\).*112px"):
        ImageFolderDataset(tmp_path, labelled=True, landmarks="auto")


@pytest.mark.parametrize("points", [3, 0])
def test_a_sidecar_with_an_unusable_point_count_names_the_file(
    tmp_path: Path, face_folder, points: int
) -> None:
    face_folder(tmp_path, identities=1, per_identity=2)
    _rewrite_sidecar(tmp_path / "landmarks5.csv", points)
    with pytest.raises(LandmarkFileError, match=rf"landmarks5\.csv: {points} points per image"):
        open_dataset(tmp_path, labelled=True)
