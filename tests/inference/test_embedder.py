"""FaceEmbedder: raw photos -> aligned crops -> unit embeddings, with the answers' shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lafslib.data.synthetic import render_face
from lafslib.errors import DataError, ExportError, InputNotFoundError
from lafslib.evaluation.identity import model_identity
from lafslib.inference import FaceEmbedder, NoFaceError, ThresholdError
from lafslib.io import BadImageError
from lafslib.landmarks.detectors import Face, FaceDetector
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112
from lafslib.models import create_model, save_export

OFFSETS = ((40, 30), (10, 100))  # where faces are pasted into a photo, (x, y)


class PastedDetector(FaceDetector):
    """Finds the faces pasted at OFFSETS (the first ``count``), the second one smaller box."""

    name = "pasted"

    def __init__(self, count: int = 1) -> None:
        self.count = count

    def detect(self, image: np.ndarray, key: object = None) -> list[Face]:
        if image.max() == 0:
            return []
        faces = []
        for i, (dx, dy) in enumerate(OFFSETS[: self.count]):
            pts = ARCFACE_TEMPLATE_112 + [dx, dy]
            box = np.array([dx + 20, dy + 30, dx + 92 - 10 * i, dy + 105 - 10 * i], float)
            faces.append(Face(box, 0.9 - 0.1 * i, pts, "arcface5"))
        return faces[::-1]  # the detector's order is not the answer's order


def photo_with_faces(count: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    canvas = np.zeros((240, 200, 3), np.uint8)
    crops = []
    for i, (dx, dy) in enumerate(OFFSETS[:count]):
        crop = render_face(i, 0, 112)["image"]
        canvas[dy : dy + 112, dx : dx + 112] = crop
        crops.append(crop)
    return canvas, crops


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_export(
        create_model("mobilefacenet_test").eval(), tmp_path_factory.mktemp("e") / "m"
    )


def test_a_raw_face_is_aligned_and_embedded_like_its_crop(export: Path) -> None:
    photo, crops = photo_with_faces()
    embedder = FaceEmbedder(export, PastedDetector())
    (face,) = embedder.get(photo)
    np.testing.assert_allclose(face.landmarks, ARCFACE_TEMPLATE_112 + [40, 30])
    np.testing.assert_allclose(face.box, [60, 60, 132, 135])
    assert face.score == pytest.approx(0.9) and face.photo == 0
    assert face.embedding.dtype == np.float32 and face.embedding.shape == (32,)
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-6)
    direct = embedder.embed_aligned(crops[0][None])[0]
    np.testing.assert_allclose(face.embedding, direct, atol=1e-5)  # a pure shift: same pixels
    other = embedder.embed_aligned(render_face(5, 3, 112)["image"][None])[0]
    assert face.similarity(direct) > 0.9999 > face.similarity(other)


def test_paths_arrays_and_pil_images_one_or_many(export: Path, tmp_path: Path) -> None:
    photo, _ = photo_with_faces()
    Image.fromarray(photo).save(tmp_path / "p.png")
    embedder = FaceEmbedder(str(export), PastedDetector())
    by_array = embedder.get(photo)[0].embedding
    for given in (tmp_path / "p.png", str(tmp_path / "p.png"), Image.fromarray(photo)):
        np.testing.assert_allclose(embedder.get(given)[0].embedding, by_array, atol=1e-6)
    many = embedder.get([photo, np.zeros_like(photo), tmp_path / "p.png"])
    assert [len(f) for f in many] == [1, 0, 1] and many[2][0].photo == 2
    stacked = embedder.get(np.stack([photo, photo]))  # a 4-D array is many photos
    assert len(stacked) == 2 and all(len(f) == 1 for f in stacked)
    grey = embedder.get(photo[:, :, 0])  # (H, W) grey is taken as RGB
    assert len(grey) == 1
    with pytest.raises(DataError, match="uint8"):
        embedder.get(photo.astype(np.float32))
    with pytest.raises(DataError, match="not a photo"):
        embedder.get(42)
    with pytest.raises(InputNotFoundError, match="nothere.jpg"):
        embedder.get(tmp_path / "nothere.jpg")
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(BadImageError, match="bad.jpg"):
        embedder.get(tmp_path / "bad.jpg")


def test_faces_come_largest_first_and_max_faces_keeps_the_largest(export: Path) -> None:
    photo, crops = photo_with_faces(2)
    faces = FaceEmbedder(export, PastedDetector(2)).get(photo)
    assert len(faces) == 2 and faces[0].area > faces[1].area
    np.testing.assert_allclose(faces[1].landmarks, ARCFACE_TEMPLATE_112 + [10, 100])
    (only,) = FaceEmbedder(export, PastedDetector(2), max_faces=1).get(photo)
    np.testing.assert_allclose(only.embedding, faces[0].embedding, atol=1e-6)


def test_deterministic_and_independent_of_the_batch_size(export: Path) -> None:
    photos = [photo_with_faces(2)[0] for _ in range(3)]
    a = FaceEmbedder(export, PastedDetector(2), batch_size=64).get(photos)
    b = FaceEmbedder(export, PastedDetector(2), batch_size=1).get(photos)
    c = FaceEmbedder(export, PastedDetector(2), batch_size=64).get(photos)
    for fa, fb, fc in zip(sum(a, []), sum(b, []), sum(c, [])):
        np.testing.assert_allclose(fa.embedding, fb.embedding, atol=1e-5)
        np.testing.assert_array_equal(fa.embedding, fc.embedding)


def test_flip_test_adds_the_mirrored_crop(export: Path) -> None:
    crop = render_face(1, 2, 112)["image"]
    model = create_model("mobilefacenet_test").eval()
    embedder = FaceEmbedder(model, None, flip=True)
    got = embedder.get(crop, aligned=True)[0]
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        want = (model(x) + model(x.flip(-1)))[0].numpy()
    np.testing.assert_allclose(got.embedding, want / np.linalg.norm(want), atol=1e-5)
    assert np.isnan(got.score) and list(got.box) == [0, 0, 112, 112]
    plain = FaceEmbedder(model, None).get(crop, aligned=True)[0]
    assert plain.similarity(got) < 0.9999
    with pytest.raises(DataError, match="112x112"):
        embedder.get(np.zeros((100, 120, 3), np.uint8), aligned=True)
    with pytest.raises(ValueError, match="no detector"):
        embedder.get(crop)


class KeypointRecorder(torch.nn.Module):
    """A KP-RPE-like model that records the keypoints it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = create_model("vit_test_kprpe").eval()
        self.pretrained_cfg = self.inner.pretrained_cfg
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
        self.seen.append(kp.clone())
        return self.inner(x, kp)


def test_kprpe_models_get_the_aligned_points_in_unit_coordinates() -> None:
    model = KeypointRecorder()
    assert model.pretrained_cfg.needs_keypoints
    photo, _ = photo_with_faces()
    FaceEmbedder(model, PastedDetector()).get(photo)
    np.testing.assert_allclose(model.seen[0][0].numpy(), ARCFACE_TEMPLATE_112 / 112, atol=1e-5)


def test_verify_decides_at_the_threshold_and_names_a_photo_without_a_face(export: Path) -> None:
    photo, _ = photo_with_faces()
    other = photo.copy()
    other[30:142, 40:152] = render_face(7, 1, 112)["image"]
    embedder = FaceEmbedder(export, PastedDetector(), threshold=0.999)
    same = embedder.verify(photo, photo.copy())
    assert same.same and same.similarity == pytest.approx(1.0, abs=1e-5)
    diff = embedder.verify(photo, other)
    assert diff.similarity < 0.999 and diff.same is False
    assert diff.threshold.describe() == "0.9990 (given)"
    assert FaceEmbedder(export, PastedDetector()).verify(photo, other).same is None
    with pytest.raises(NoFaceError, match=r"<array 1>: no face found \(detector pasted\)"):
        embedder.verify(photo, np.zeros_like(photo))


def _report(path: Path, identity: dict, thresholds: dict, **extra: object) -> Path:
    results = {"lfw": {"pairs": 6000, "thresholds": thresholds}, "mini": {"pairs": 100}}
    body = {"model": "x", "model_id": identity, "flip": True, "results": results, **extra}
    path.write_text(json.dumps(body))
    return path


def test_thresholds_from_a_report_of_this_model_only(export: Path, tmp_path: Path) -> None:
    entry = {"similarity": 0.42, "distance": 1.16, "far": 0.001, "tar": 0.97}
    table = {"0.01": {**entry, "similarity": 0.3}, "0.001": entry, "0.0001": None}
    report = _report(tmp_path / "report.json", model_identity(export), table)
    embedder = FaceEmbedder(export, PastedDetector(), threshold=f"{report}@1e-3")
    t = embedder.threshold
    assert (t.value, t.far, t.set_name, t.flip) == (0.42, 1e-3, "lfw", True)
    assert embedder.flip  # follows the report's flip test unless told otherwise
    assert "FAR=0.001 on lfw" in t.describe() and "report.json" in t.describe()
    assert not FaceEmbedder(export, None, threshold=f"{report}@1e-3", flip=False).flip
    assert FaceEmbedder(export, None, threshold=f"{report}@lfw@0.01").threshold.value == 0.3
    with pytest.raises(ThresholdError, match="FAR=0.0001 is not measurable on lfw"):
        FaceEmbedder(export, None, threshold=f"{report}@1e-4")
    with pytest.raises(ThresholdError, match="no set 'cfp'"):
        FaceEmbedder(export, None, threshold=f"{report}@cfp@1e-3")
    with pytest.raises(ThresholdError, match="mini.*records no thresholds"):
        FaceEmbedder(export, None, threshold=f"{report}@mini@1e-3")
    with pytest.raises(ThresholdError, match="REPORT.json@FAR"):
        FaceEmbedder(export, None, threshold=str(report))
    with pytest.raises(ThresholdError, match=r"\[-1, 1\]"):
        FaceEmbedder(export, None, threshold=1.5)
    with pytest.raises(InputNotFoundError, match="nothere.json"):
        FaceEmbedder(export, None, threshold=f"{tmp_path}/nothere.json@1e-3")
    other = save_export(create_model("mobilefacenet_test").eval(), tmp_path / "other")
    with pytest.raises(ThresholdError, match="thresholds of another model"):
        FaceEmbedder(other, None, threshold=f"{report}@1e-3")
    with pytest.raises(ThresholdError, match="a model object"):
        FaceEmbedder(create_model("mobilefacenet_test"), None, threshold=f"{report}@1e-3")
    old = _report(tmp_path / "old.json", None, table)
    with pytest.raises(ThresholdError, match="records no model identity"):
        FaceEmbedder(export, None, threshold=f"{old}@1e-3")
    white = _report(tmp_path / "w.json", model_identity(export), table, whitening={"images": 9})
    with pytest.raises(ThresholdError, match="whitened"):
        FaceEmbedder(export, None, threshold=f"{white}@1e-3")


def test_a_pretraining_export_has_no_head_to_embed_with(tmp_path: Path) -> None:
    save_export(create_model("vit_test").eval(), tmp_path / "ssl", feature="ssl")
    with pytest.raises(ExportError, match="without a trained embedding head"):
        FaceEmbedder(tmp_path / "ssl", None)
    embedder = FaceEmbedder(tmp_path / "ssl", None, allow_ssl=True)
    assert embedder.get(render_face(0, 0, 112)["image"], aligned=True)[0].embedding.ndim == 1


def test_lafslib_exports_the_embedder_lazily() -> None:
    code = (
        "import sys, lafslib; light = 'torch' not in sys.modules; "
        "from lafslib.inference import FaceEmbedder; "
        "print(light, lafslib.FaceEmbedder is FaceEmbedder)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_a_model_on_the_hub_embeds_and_keeps_its_identity(tmp_path, monkeypatch) -> None:
    """``hf://owner/repo@rev`` (an offline Hugging Face cache built here): the embedder loads it
    through its local copy, and thresholds of that copy's report apply to it."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAFS_CACHE", str(tmp_path / "lafs"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / "models--someone--face"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "v2").write_text(commit)
    snap = save_export(create_model("mobilefacenet_test").eval(), root / "snapshots" / commit)
    entry = {"similarity": 0.3, "distance": 1.4, "far": 1e-3, "tar": 0.9}
    report = _report(tmp_path / "r.json", model_identity(snap), {"0.001": entry})
    embedder = FaceEmbedder("hf://someone/face@v2", None, threshold=f"{report}@1e-3")
    assert embedder.identity == model_identity(snap) and embedder.threshold.value == 0.3
    crop = render_face(0, 0, 112)["image"]
    local = FaceEmbedder(snap, None, flip=True).get(crop, aligned=True)[0]  # as the report
    np.testing.assert_allclose(embedder.get(crop, aligned=True)[0].embedding, local.embedding)
