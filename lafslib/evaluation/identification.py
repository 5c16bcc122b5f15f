"""Closed-set identification: CMC curves with a distractor gallery, and few-shot galleries.

TinyFace-style protocol: every probe is compared (cosine) with all gallery images of known
identities plus a distractor set of other people; the rank of a probe is one plus the number of
gallery entries strictly more similar than its best mated entry. CMC(k) is the fraction of
probes of rank <= k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cmc", "few_shot_split", "few_shot_identification"]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cmc(
    probes: np.ndarray,
    probe_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    distractors: np.ndarray | None = None,
    ranks: tuple[int, ...] = (1, 5, 20),
    chunk: int = 1024,
) -> dict[str, Any]:
    """Cumulative match characteristic of probes against a gallery (+ distractors).

    Args:
        probes: (P, D) embeddings; probe_labels (P,).
        gallery: (G, D) embeddings; gallery_labels (G,).
        distractors: (M, D) embeddings of people outside the probe set (never a match).
        ranks: ranks to report.
        chunk: probes scored at a time (bounds memory to chunk x (G + M) similarities).

    Returns:
        ``{"rank_k": CMC(k)}`` for each k, ``"ranks"`` (P,) per-probe ranks.
    """
    probe_labels = np.asarray(probe_labels)
    gallery_labels = np.asarray(gallery_labels)
    gal = _normalise(gallery)
    if distractors is not None and len(distractors):
        gal = np.concatenate([gal, _normalise(distractors)])
        gallery_labels = np.concatenate([gallery_labels, np.full(len(distractors), -(10**9))])
    missing = set(probe_labels.tolist()) - set(gallery_labels.tolist())
    if missing:
        raise ValueError(
            f"{len(missing)} probe identities have no gallery entry, e.g. {sorted(missing)[:3]}"
        )
    pro = _normalise(probes)
    out = np.empty(len(pro), dtype=np.int64)
    for s in range(0, len(pro), chunk):
        sim = pro[s : s + chunk] @ gal.T
        mated = probe_labels[s : s + chunk, None] == gallery_labels[None]
        best = np.where(mated, sim, -np.inf).max(axis=1)
        out[s : s + chunk] = (np.where(mated, -np.inf, sim) > best[:, None]).sum(axis=1) + 1
    result: dict[str, Any] = {f"rank_{k}": float(np.mean(out <= k)) for k in ranks}
    result["ranks"] = out
    return result


def few_shot_split(labels: np.ndarray, shots: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a k-shot gallery (``shots`` images per identity) and of the probes (the rest).

    Identities with no image left for probing contribute gallery images only.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    gallery, probes = [], []
    for y in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == y)[0])
        gallery += idx[:shots].tolist()
        probes += idx[shots:].tolist()
    return np.sort(gallery), np.sort(probes)


def few_shot_identification(
    embeddings: np.ndarray,
    labels: np.ndarray,
    shots: int,
    seed: int = 0,
    ranks: tuple[int, ...] = (1, 5),
) -> dict[str, Any]:
    """k-shot identification: each identity's gallery template is the mean of its ``shots``
    normalised embeddings; every other image is a probe."""
    labels = np.asarray(labels)
    g_idx, p_idx = few_shot_split(labels, shots, seed)
    emb = _normalise(embeddings)
    ids = np.unique(labels[g_idx])
    templates = np.stack([emb[g_idx][labels[g_idx] == y].mean(0) for y in ids])
    result = cmc(emb[p_idx], labels[p_idx], templates, ids, ranks=ranks)
    result.update({"shots": shots, "probes": int(len(p_idx)), "identities": int(len(ids))})
    return result
