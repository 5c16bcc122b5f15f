"""``embed_collection``: folders and .rec files into embeddings files, resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lafslib.data import pack_folder
from lafslib.errors import PathConflictError
from lafslib.inference import FaceEmbedder
from lafslib.inference import collection as coll
from lafslib.inference.collection import embed_collection, embed_in_memory
from lafslib.inference.store import load_embeddings
from lafslib.landmarks.detectors import Face, FaceDetector
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112
from lafslib.models import create_model, save_export


class CentreDetector(FaceDetector):
    """One face at the centre of a photo unless the photo is dark."""

    name = "centre"

    def detect(self, image: np.ndarray, key: object = None) -> list[Face]:
        if image.mean() < 5:
            return []
        h, w = image.shape[:2]
        pts = ARCFACE_TEMPLATE_112 + [(w - 112) / 2, (h - 112) / 2]
        return [Face(np.array([0, 0, w, h], float), 0.8, pts, "arcface5")]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> FaceEmbedder:
    torch.manual_seed(0)
    export = save_export(create_model("mobilefacenet_test").eval(), tmp_path_factory.mktemp("m"))
    return FaceEmbedder(export, CentreDetector(), batch_size=4)


@pytest.fixture()
def faces(tmp_path: Path, face_folder) -> Path:
    face_folder(tmp_path / "faces", identities=3, per_identity=3)
    return tmp_path / "faces"


def test_an_aligned_folder_becomes_an_embeddings_file(embedder, faces, tmp_path) -> None:
    report = embed_collection(faces, tmp_path / "out" / "e.npy", embedder)
    assert report.aligned and report.photos == report.faces == 9 and not report.no_face
    emb = load_embeddings(tmp_path / "out" / "e.npy")
    assert emb.vectors.shape == (9, 32) and emb.vectors.dtype == np.float32
    assert emb.paths[:2] == ["id0/0.png", "id0/1.png"] and emb.labels()[-1] == "id2"
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    direct = embedder.get([faces / p for p in emb.paths], aligned=True)
    np.testing.assert_allclose(emb.vectors, np.stack([f[0].embedding for f in direct]), atol=1e-5)
    meta = json.loads((tmp_path / "out" / "e.json").read_text())
    assert meta["model_id"] == embedder.identity and meta["dim"] == 32 and meta["aligned"]
    assert not (tmp_path / "out" / "e.npy.partial").exists()
    with pytest.raises(PathConflictError, match="already exists"):
        embed_collection(faces, tmp_path / "out" / "e.npy", embedder)
    with pytest.raises(PathConflictError, match="inside the source"):
        embed_collection(faces, faces / "e.npy", embedder)


def test_an_interrupted_run_resumes_where_it_stopped(embedder, faces, tmp_path, monkeypatch):
    whole = embed_collection(faces, tmp_path / "whole.npy", embedder, shard=2)
    calls = {"n": 0}
    real = coll._embed_shard

    def crash_on_third(items, emb):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(items, emb)

    monkeypatch.setattr(coll, "_embed_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        embed_collection(faces, tmp_path / "r.npy", embedder, shard=2)
    assert sorted(p.name for p in (tmp_path / "r.npy.partial").glob("*.npz")) == [
        "000000.npz",
        "000001.npz",
    ]
    with pytest.raises(ValueError, match="other options.*dtype"):
        embed_collection(faces, tmp_path / "r.npy", embedder, shard=2, dtype="float16")
    monkeypatch.setattr(coll, "_embed_shard", real)
    resumed = embed_collection(faces, tmp_path / "r.npy", embedder, shard=2)
    assert resumed.skipped_done == 4 and resumed.faces == whole.faces == 9
    a, b = load_embeddings(tmp_path / "whole.npy"), load_embeddings(tmp_path / "r.npy")
    assert a.paths == b.paths
    np.testing.assert_array_equal(np.asarray(a.vectors), np.asarray(b.vectors))


def test_raw_photos_list_faces_not_found_and_unreadable_files(embedder, faces, tmp_path) -> None:
    raw = tmp_path / "raw"
    for i, path in enumerate(sorted(faces.glob("id0/*.png"))):
        canvas = np.zeros((160, 140, 3), np.uint8)
        canvas[24:136, 14:126] = np.asarray(Image.open(path))
        (raw / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas).save(raw / "a" / f"{i}.jpg", quality=95)
    Image.fromarray(np.zeros((90, 90, 3), np.uint8)).save(raw / "dark.png")
    (raw / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    report = embed_collection(raw, tmp_path / "raw.npy", embedder, dtype="float16")
    assert not report.aligned and report.photos == 5 and report.faces == 3
    assert report.no_face == ["dark.png"] and list(report.unreadable) == ["broken.jpg"]
    emb = load_embeddings(tmp_path / "raw.npy")
    assert emb.vectors.dtype == np.float16 and np.all(emb.scores == pytest.approx(0.8))
    np.testing.assert_allclose(emb.landmarks[0], ARCFACE_TEMPLATE_112 + [14, 24], atol=0.01)
    meta = json.loads((tmp_path / "raw.json").read_text())
    assert meta["no_face"] == ["dark.png"] and "broken.jpg" in meta["unreadable"]
    assert meta["detector"] == "centre"


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(embedder, faces, tmp_path) -> None:
    one = embed_in_memory(faces, embedder)
    two = embed_in_memory(faces, embedder, workers=2)
    assert one.paths == two.paths
    np.testing.assert_allclose(one.vectors, two.vectors, atol=1e-6)


def test_a_record_file_is_embedded_record_by_record(embedder, faces, tmp_path) -> None:
    shutil.rmtree(faces / "id2")
    (faces / "landmarks5.csv").unlink()
    pack_folder(faces, tmp_path / "f.rec", progress=False)
    report = embed_collection(tmp_path / "f.rec", tmp_path / "rec.npy", embedder)
    emb = load_embeddings(tmp_path / "rec.npy")
    assert report.aligned and len(emb) == 6 and emb.paths[0] == "rec:1"
    folder = embed_in_memory(faces, embedder)
    np.testing.assert_allclose(np.asarray(emb.vectors), folder.vectors, atol=1e-5)
