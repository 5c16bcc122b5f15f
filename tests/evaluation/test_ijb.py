"""IJB 1:1 protocol on a small IJB-like set built from faces-mini, against explicit loops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lafslib.cli import main
from lafslib.data.ijb import IJBMetaError, ijb_meta_paths, load_ijb_meta, write_ijb
from lafslib.evaluation.embed import embed_images
from lafslib.evaluation.ijb import (
    IJB_MODES,
    IJBEmbeddings,
    embed_ijb,
    evaluate_ijb,
    ijb_all_modes,
    ijb_verification,
    mode_name,
    pool_templates,
    score_template_pairs,
)
from lafslib.evaluation.verification import FAR_TARGETS
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112
from lafslib.models import create_model, save_export

PAD = (10, 14)  # x, y offset of the aligned face inside its loose crop


def _loose_crop(face: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Pad (and scale) an aligned face into a loose crop; its 5 points follow."""
    side = round(112 * scale)
    if side != 112:
        face = np.asarray(Image.fromarray(face).resize((side, side), Image.BILINEAR))
    crop = np.zeros((side + 2 * PAD[1], side + 2 * PAD[0], 3), np.uint8)
    crop[PAD[1] : PAD[1] + side, PAD[0] : PAD[0] + side] = face
    return crop, ARCFACE_TEMPLATE_112 * (side / 112) + PAD


@pytest.fixture(scope="module")
def ijb_set(faces_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """20 identities x 2 templates: images 0-2 (0 and 1 share a media) and 3-4 (one media id
    reused from the first template, so media pooling must stay within a template)."""
    rng = np.random.default_rng(0)
    people = sorted(p for p in (faces_mini / "identities").iterdir() if p.is_dir())
    faces, crops, landmarks, templates, medias = [], [], [], [], []
    for k, person in enumerate(people):
        for j, f in enumerate(sorted(person.glob("*.jpg"))[:5]):
            face = np.asarray(Image.open(f).convert("RGB"))
            crop, lm = _loose_crop(face, 1.0 if j % 2 == 0 else 1.25)
            faces.append(face)
            crops.append(crop)
            landmarks.append(lm)
            templates.append(1000 + 7 * k + (0 if j < 3 else 3))
            medias.append({0: 50 + k, 1: 50 + k, 2: 90 + k, 3: 50 + k, 4: 120 + k}[j])
    ids = sorted(set(templates))
    pairs = np.array([(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]])
    labels = (pairs[:, 0] - 1000) // 7 == (pairs[:, 1] - 1000) // 7
    scores = rng.uniform(0.3, 1.0, len(crops))
    root = tmp_path_factory.mktemp("ijb") / "IJBC"
    write_ijb(
        root, "IJBC", crops, templates, medias, np.stack(landmarks), scores, pairs, labels, ".png"
    )
    model = create_model("vit_test").eval()
    meta = load_ijb_meta(root, "IJBC")
    emb = embed_ijb(model, meta, batch_size=64, workers=2)
    return {"root": root, "faces": np.stack(faces), "model": model, "meta": meta, "emb": emb}


def _reference_scores(emb: IJBEmbeddings, flip: bool, norm: bool, detector: bool) -> np.ndarray:
    """insightface's procedure with explicit loops: per-face features, mean per media within a
    template, sum over media, normalise, cosine per pair."""
    feats = []
    for i in range(len(emb.plain)):
        f = emb.plain[i].astype(np.float64)
        if flip:
            f = f + emb.flipped[i]
        if not norm:
            f = f / np.sqrt(np.sum(f * f))
        if detector:
            f = f * float(emb.scores[i])
        feats.append(f)
    template = {}
    for t in sorted(set(emb.templates.tolist())):
        per_media: dict[int, list[np.ndarray]] = {}
        for i in range(len(feats)):
            if emb.templates[i] == t:
                per_media.setdefault(int(emb.medias[i]), []).append(feats[i])
        total = sum(np.mean(v, axis=0) for v in per_media.values())
        template[t] = total / np.sqrt(np.sum(total * total))
    return np.array([float(template[a] @ template[b]) for a, b in emb.pairs])


def _reference_tar(scores: np.ndarray, labels: np.ndarray, far: float) -> float | None:
    """Largest TAR over every threshold (accept score >= t) whose FAR <= far."""
    neg = int((~labels).sum())
    if far < 1.0 / neg:
        return None
    best = 0.0
    for t in np.unique(scores):
        fa = sum(1 for s, y in zip(scores, labels) if not y and s >= t) / neg
        if fa <= far + 1e-12:
            best = max(best, sum(1 for s, y in zip(scores, labels) if y and s >= t) / labels.sum())
    return best


def test_alignment_and_embeddings_match_the_aligned_faces(ijb_set: dict) -> None:
    emb, faces = ijb_set["emb"], ijb_set["faces"]
    unscaled = np.nonzero(np.arange(len(faces)) % 5 % 2 == 0)[0]  # padded only: exact pixels
    direct = embed_images(ijb_set["model"], faces[unscaled], flip=False)
    np.testing.assert_allclose(emb.plain[unscaled], direct, rtol=1e-4, atol=1e-4)
    mirrored = embed_images(ijb_set["model"], faces[unscaled, :, ::-1].copy(), flip=False)
    np.testing.assert_allclose(emb.flipped[unscaled], mirrored, rtol=1e-4, atol=1e-4)
    assert emb.plain.shape == emb.flipped.shape == (100, direct.shape[1])


@pytest.mark.parametrize(("flip", "norm", "detector"), IJB_MODES)
def test_every_mode_matches_explicit_loops(
    ijb_set: dict, flip: bool, norm: bool, detector: bool
) -> None:
    emb = ijb_set["emb"]
    r = ijb_verification(emb, flip, norm, detector, batch_size=97, return_scores=True)
    ref = _reference_scores(emb, flip, norm, detector)
    np.testing.assert_allclose(r["scores"], ref, atol=2e-6)
    assert r["mode"] == mode_name(flip, norm, detector)
    assert (r["pairs"], r["mated"], r["templates"], r["faces"]) == (780, 20, 40, 100)
    for far in FAR_TARGETS:
        expected = _reference_tar(r["scores"], emb.labels, far)
        got = r["tar_at_far"][f"{far:g}"]
        assert got == expected, (far, got, expected)


def test_modes_differ_where_they_should(ijb_set: dict) -> None:
    emb = ijb_set["emb"]
    scores = {
        mode_name(*m): ijb_verification(emb, *m, return_scores=True)["scores"] for m in IJB_MODES
    }
    assert len(scores) == 8
    # every switch changes the scores on real faces with distinct norms and detector scores
    for a, b in [("N1D1F1", "N0D1F1"), ("N1D1F1", "N1D0F1"), ("N1D1F1", "N1D1F0")]:
        assert np.abs(scores[a] - scores[b]).max() > 1e-4
    # a template of one face has the same direction whatever N and D do
    single = IJBEmbeddings(
        emb.plain[:2], emb.flipped[:2], emb.scores[:2], np.array([1, 2]), np.array([1, 1]),
        np.array([[1, 2]]), np.array([True]),
    )  # fmt: skip
    ref = ijb_verification(single, True, True, True, return_scores=True)["scores"]
    for n, d in [(False, True), (True, False), (False, False)]:
        got = ijb_verification(single, True, n, d, return_scores=True)["scores"]
        np.testing.assert_allclose(got, ref, atol=1e-6)


def test_pooling_means_media_then_sums() -> None:
    feats = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    ids, pooled = pool_templates(feats, np.array([5, 5, 5, 3]), np.array([1, 1, 2, 1]))
    np.testing.assert_array_equal(ids, [3, 5])
    # template 5: mean([2,0],[0,2]) = [1,1]; + [1,0] = [2,1]
    np.testing.assert_allclose(pooled[1], np.array([2.0, 1.0]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(pooled[0], [0.0, 1.0])
    with pytest.raises(ValueError, match="templates without faces"):
        score_template_pairs(ids, pooled, np.array([[3, 4]]))


@pytest.mark.parametrize("n_pairs", [500, 60000])  # sparse (gathered) and dense (matmul)
def test_scoring_paths_agree(n_pairs: int) -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(300, 16)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ids = np.arange(300) * 3
    pairs = ids[rng.integers(0, 300, (n_pairs, 2))]
    direct = np.sum(feats[pairs[:, 0] // 3] * feats[pairs[:, 1] // 3], axis=1)
    for batch, dense in [(10**6, 1e9), (333, 1e9), (333, 0.0), (333, 0.02)]:
        got = score_template_pairs(ids, feats, pairs, batch_size=batch, dense_fraction=dense)
        np.testing.assert_allclose(got, direct, atol=1e-6)


def test_evaluate_ijb_report(ijb_set: dict) -> None:
    emb = ijb_set["emb"]
    results, curves = ijb_all_modes(emb)
    assert list(results) == [mode_name(*m) for m in IJB_MODES] == list(curves)
    fpr, tpr = curves["N1D1F1"]
    assert fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    # faces of one person score higher than strangers, even with a tiny random model
    scores = ijb_verification(emb, return_scores=True)["scores"]
    assert scores[emb.labels].mean() > scores[~emb.labels].mean()


def test_malformed_meta_error_stops_evaluation(ijb_set: dict, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    meta = ijb_set["meta"]
    write_ijb(
        root, "IJBB", [np.zeros((120, 120, 3), np.uint8)] * 2, [1, 2], [1, 2],
        meta.landmarks[:2], [1.0, 1.0], [[1, 2]], [0],
    )  # fmt: skip
    path = ijb_meta_paths(root, "IJBB")["face_tid_mid"]
    path.write_text("1.jpg 1 1\n2.jpg 2\n")
    with pytest.raises(IJBMetaError, match=rf"{path}:2: expected 3 fields"):
        evaluate_ijb(ijb_set["model"], root, "IJBB")


def test_lafs_eval_ijb_and_identification(ijb_set: dict, faces_mini: Path, tmp_path: Path) -> None:
    save_export(ijb_set["model"], tmp_path / "export")
    gallery, probe = tmp_path / "gallery", tmp_path / "probe"
    people = sorted(p for p in (faces_mini / "identities").iterdir() if p.is_dir())
    for k, person in enumerate(people):
        files = sorted(person.glob("*.jpg"))
        if k < 15:  # identities 15-19 are absent from the gallery: non-mated probes
            (gallery / person.name).mkdir(parents=True)
            (gallery / person.name / files[0].name).symlink_to(files[0])
        (probe / person.name).mkdir(parents=True)
        for f in files[1:3]:
            (probe / person.name / f.name).symlink_to(f)
    out = tmp_path / "report"
    args = ["eval", "--model", str(tmp_path / "export"), "--out", str(out)]
    args += ["--ijb", str(ijb_set["root"]), "--ijb-name", "IJBC", "--workers", "2"]
    args += ["--ident", str(gallery), "--probe", str(probe), "--fpir", "0.1", "0.3"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["results"] == {}
    ijb = report["ijb"]
    assert (ijb["faces"], ijb["templates"], ijb["pairs"], ijb["mated"]) == (100, 40, 780, 20)
    assert list(ijb["modes"]) == [mode_name(*m) for m in IJB_MODES]
    expected = ijb_verification(ijb_set["emb"], True, False, True)["tar_at_far"]
    assert ijb["modes"]["N0D1F1"]["tar_at_far"] == pytest.approx(expected)
    ident = report["identification"]
    assert (ident["mated"], ident["non_mated"], ident["identities"]) == (30, 10, 15)
    assert set(ident["dir_at_fpir"]) == {"0.1", "0.3"}
    assert all(ident["fpir_achieved"][k] <= float(k) for k in ident["fpir_achieved"])
    md = (out / "report.md").read_text()
    assert "## IJBC 1:1 verification" in md and "| N1D1F1 |" in md and "DIR@FPIR=0.1" in md
    assert (out / "roc_ijb.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "roc.png").exists()
