"""Identification: closed-set CMC with distractors, few-shot galleries, open-set 1:N at FPIR.

TinyFace-style protocol: every probe is compared (cosine) with all gallery images of known
identities plus a distractor set of other people; the rank of a probe is one plus the number of
gallery entries strictly more similar than its best mated entry. CMC(k) is the fraction of
probes of rank <= k.

Open-set 1:N (IJB-C 1:N, NIST FRVT 1:N; Grother et al., NISTIR 8238): some probes have no mate
in the gallery. A probe's candidate list is returned when its top score is strictly above a
threshold. The threshold is chosen from the top scores of the *non-mated* probes only, so that
the false positive identification rate FPIR (fraction of non-mated probes with any candidate
returned) does not exceed the target; the detection and identification rate DIR is the fraction
of mated probes whose mate is within rank ``r`` and scores above the threshold. (insightface's
and AdaFace's 1:N scripts take the threshold from every impostor probe-gallery score instead,
at an index off by one, so their FPIR is not the stated one.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "cmc",
    "few_shot_split",
    "few_shot_identification",
    "fpir_threshold",
    "open_set_identification",
]


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


def fpir_threshold(nonmated_top: np.ndarray, fpir: float) -> float:
    """The lowest threshold at which at most ``fpir`` of the non-mated probes get a candidate.

    A candidate is returned when its score is strictly above the threshold. With the N top
    scores sorted in decreasing order and ``k = floor(fpir * N)`` false positives allowed, the
    threshold is the (k+1)-th largest score (``-inf`` when ``k >= N``). Ties make the achieved
    FPIR lower than the target, never higher.

    Args:
        nonmated_top: (N,) best gallery score of each non-mated probe.
        fpir: target false positive identification rate in [0, 1].
    """
    top = np.sort(np.asarray(nonmated_top, dtype=np.float64))[::-1]
    if len(top) == 0:
        raise ValueError("FPIR needs at least one non-mated probe")
    if not 0.0 <= fpir <= 1.0:
        raise ValueError(f"fpir must be in [0, 1], got {fpir}")
    k = int(np.floor(fpir * len(top) + 1e-9))
    return -np.inf if k >= len(top) else float(top[k])


def open_set_identification(
    probes: np.ndarray,
    probe_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    fpirs: tuple[float, ...] = (0.01, 0.1),
    ranks: tuple[int, ...] = (1, 5),
    rank: int = 1,
    chunk: int = 1024,
) -> dict[str, Any]:
    """Open-set 1:N identification: DIR at FPIR (see the module docstring).

    Probes whose label has no gallery entry are non-mated. An identity's score is its best
    gallery entry (cosine); a mated probe's rank is one plus the number of other identities
    scoring strictly higher than its mate.

    Args:
        probes: (P, D) embeddings; probe_labels (P,).
        gallery: (G, D) embeddings; gallery_labels (G,) (several entries per identity allowed).
        fpirs: FPIR targets.
        ranks: closed-set ranks reported for the mated probes (CMC, no threshold).
        rank: rank within which a mate counts as identified for DIR.
        chunk: probes scored at a time (memory ~ chunk x G).

    Returns:
        ``{"dir_at_fpir": {fpir: DIR}, "threshold": {fpir: t}, "fpir_achieved": {fpir: f},
        "rank_k": closed-set CMC(k) of the mated probes, "mated", "non_mated", "identities"}``.
    """
    probe_labels = np.asarray(probe_labels)
    gallery_labels = np.asarray(gallery_labels)
    order = np.argsort(gallery_labels, kind="stable")
    ids, starts = np.unique(gallery_labels[order], return_index=True)
    gal = _normalise(gallery)[order]
    pro = _normalise(probes)
    pos = np.minimum(np.searchsorted(ids, probe_labels), len(ids) - 1)
    mated = ids[pos] == probe_labels
    if not mated.any():
        raise ValueError("no probe has a mate in the gallery: DIR is undefined")
    if mated.all():
        raise ValueError("every probe has a mate in the gallery: FPIR needs non-mated probes")
    top = np.empty(len(pro))
    mate_score = np.full(len(pro), -np.inf)
    mate_rank = np.zeros(len(pro), dtype=np.int64)
    for s in range(0, len(pro), chunk):
        per_id = np.maximum.reduceat(pro[s : s + chunk] @ gal.T, starts, axis=1)  # (c, I)
        top[s : s + chunk] = per_id.max(axis=1)
        m = mated[s : s + chunk]
        rows = np.nonzero(m)[0]
        own = per_id[rows, pos[s : s + chunk][rows]]
        mate_score[s + rows] = own
        mate_rank[s + rows] = (per_id[rows] > own[:, None]).sum(axis=1) + 1
    nonmated_top = top[~mated]
    ms, mr = mate_score[mated], mate_rank[mated]
    result: dict[str, Any] = {"dir_at_fpir": {}, "threshold": {}, "fpir_achieved": {}}
    for target in fpirs:
        t = fpir_threshold(nonmated_top, target)
        key = f"{target:g}"
        result["dir_at_fpir"][key] = float(np.mean((mr <= rank) & (ms > t)))
        result["threshold"][key] = None if np.isinf(t) else t  # None: accept everything
        result["fpir_achieved"][key] = float(np.mean(nonmated_top > t))
    result.update({f"rank_{k}": float(np.mean(mr <= k)) for k in ranks})
    result.update(
        {
            "rank": rank,
            "mated": int(mated.sum()),
            "non_mated": int((~mated).sum()),
            "identities": int(len(ids)),
        }
    )
    return result
