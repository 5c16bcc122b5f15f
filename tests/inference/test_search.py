"""Top-k search: exact in chunks (against a brute-force reference), faiss when installed."""

from __future__ import annotations

import numpy as np
import pytest

from lafslib.errors import DataError
from lafslib.inference.matches import search_report
from lafslib.inference.search import search, search_exact
from lafslib.inference.store import Embeddings


def _unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_chunked_search_equals_brute_force(tmp_path) -> None:
    rng = np.random.default_rng(0)
    gallery, probes = _unit(rng, 101), _unit(rng, 23)
    np.save(tmp_path / "g.npy", gallery.astype(np.float16))
    mapped = np.load(tmp_path / "g.npy", mmap_mode="r")  # float16, read block by block
    scores, idx = search_exact(mapped, probes, k=5, probe_chunk=7, gallery_chunk=13)
    sims = probes @ mapped.astype(np.float32).T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, want, 1), atol=1e-5)


def test_self_search_leaves_out_each_row_and_pads_short_galleries() -> None:
    rng = np.random.default_rng(1)
    gallery = _unit(rng, 9)
    scores, idx = search_exact(gallery, gallery, k=3, exclude=np.arange(9), gallery_chunk=4)
    assert not np.any(idx == np.arange(9)[:, None])
    sims = gallery @ gallery.T - 10 * np.eye(9)
    np.testing.assert_array_equal(idx[:, 0], sims.argmax(1))
    scores, idx = search_exact(gallery[:2], gallery, k=4)
    assert np.all(idx[:, 2:] == -1) and np.all(np.isinf(scores[:, 2:]))
    ties = np.ones((4, 2), np.float32) / np.sqrt(2)
    assert search_exact(ties, ties[:1], k=4)[1].tolist() == [[0, 1, 2, 3]]  # lower index first


def test_faiss_index_finds_the_nearest_clusters() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    centres = _unit(rng, 50, 32)
    gallery = centres.repeat(40, 0) + 0.05 * rng.normal(size=(2000, 32)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probes = gallery[::97]
    _, exact = search(gallery, probes, 1, exclude=np.arange(0, 2000, 97), index="exact")
    _, approx = search(gallery, probes, 1, exclude=np.arange(0, 2000, 97), index="faiss")
    assert np.mean(exact[:, 0] // 40 == approx[:, 0] // 40) == 1.0


def _side(vectors: np.ndarray, names: list[str], model: str | None = "a") -> Embeddings:
    n = len(vectors)
    meta = (
        {"model_id": {"name": model, "feature": "head", "weights_sha256": model}} if model else {}
    )
    return Embeddings(
        vectors, names, np.zeros(n, int), np.zeros(n), np.zeros((n, 4)), np.zeros((n, 5, 2)), meta
    )


def test_search_report_thresholds_identities_and_model_checks() -> None:
    rng = np.random.default_rng(3)
    base = _unit(rng, 3)
    vecs = np.concatenate([base, base + 0.1 * _unit(rng, 3)])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    names = [f"p{i % 3}/{i}.jpg" for i in range(6)]
    side = _side(vecs, names)
    result = search_report(side, side, k=2, self_search=True)
    assert result.rank1_identity() == (6, 6)
    assert result.lines(1)[0].startswith("p0/0.jpg -> p0/3.jpg (0.9")
    assert "own row left out" in result.summary()[0]
    kept = search_report(side, side, k=2, threshold=0.9, self_search=True)
    assert np.all(kept.indices[:, 1] == -1) and "0.9000 (given)" in kept.summary()[1]
    with pytest.raises(DataError, match="embed both with one model"):
        search_report(side, _side(vecs, names, model="b"))
    with pytest.raises(DataError, match="16-d"):
        search_report(side, _side(vecs[:, :8].copy(), names))
