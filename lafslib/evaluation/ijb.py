"""IJB-B / IJB-C 1:1 template verification (TAR at FAR 1e-6 .. 1e-1).

Protocol (insightface ``eval_ijbc.py``; Whitelam et al., "IARPA Janus Benchmark-B", CVPRW 2017;
Maze et al., "IARPA Janus Benchmark-C", ICB 2018):

1. every face is aligned (see :mod:`lafslib.data.ijb`) and embedded, together with its
   horizontal flip;
2. image features under three switches: **F** flip test (image + flip embeddings summed, else
   the image alone), **N** keep the raw feature norm (else L2-normalise each face), **D**
   multiply by the detector score;
3. media pooling: the faces of one media (one photo, or the frames of one video) within a
   template are averaged; template pooling: the media features are summed; then L2-normalised;
4. the score of a template pair is the cosine of the two template features, computed in
   batches over all pairs (bounded memory for the 15.6M IJB-C pairs);
5. TAR at each FAR on the ROC of all pair scores.

insightface reports N1 D1 F1; CVLFace reports N0 D1 (with flip) at FAR 1e-4. TAR@FAR here is the
largest TAR whose FAR does not exceed the target (:func:`lafslib.evaluation.verification.tar_at_far`);
insightface instead reads the ROC point whose FAR is nearest to the target, which can sit just
above it.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lafslib.evaluation.verification import FAR_TARGETS, roc_curve, tar_at_far

__all__ = [
    "IJB_MODES",
    "IJBEmbeddings",
    "mode_name",
    "ijb_face_features",
    "pool_templates",
    "score_template_pairs",
    "ijb_verification",
    "ijb_all_modes",
    "embed_ijb",
    "evaluate_ijb",
    "thin_roc",
]

#: All (flip, norm, detector) switch combinations, insightface's N1 D1 F1 first.
IJB_MODES: tuple[tuple[bool, bool, bool], ...] = tuple(
    sorted(itertools.product((True, False), repeat=3), reverse=True)
)


def mode_name(flip: bool, norm: bool, detector: bool) -> str:
    """insightface's name of a switch combination, e.g. ``N1D1F1``."""
    return f"N{int(norm)}D{int(detector)}F{int(flip)}"


@dataclass
class IJBEmbeddings:
    """Per-face embeddings of an IJB set and what pooling needs.

    Attributes:
        plain: (N, D) float32 embeddings of the aligned faces (not normalised).
        flipped: (N, D) float32 embeddings of their horizontal flips.
        scores: (N,) detector scores.
        templates: (N,) template ids; medias (N,) media ids.
        pairs: (P, 2) template ids; labels (P,) bool.
    """

    plain: np.ndarray
    flipped: np.ndarray
    scores: np.ndarray
    templates: np.ndarray
    medias: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray


def ijb_face_features(
    plain: np.ndarray,
    flipped: np.ndarray | None,
    scores: np.ndarray,
    flip: bool = True,
    norm: bool = True,
    detector: bool = True,
) -> np.ndarray:
    """Per-face features under the F / N / D switches (see the module docstring).

    Args:
        plain: (N, D) embeddings of the faces.
        flipped: (N, D) embeddings of the flipped faces (needed when ``flip``).
        scores: (N,) detector scores.
        flip: add the flipped embedding (F1).
        norm: keep the raw norm (N1); False L2-normalises each face first (N0).
        detector: multiply by the detector score (D1).

    Returns:
        (N, D) float32 features.
    """
    feats = np.array(plain, dtype=np.float32)
    if flip:
        if flipped is None:
            raise ValueError("flip=True needs the embeddings of the flipped faces")
        feats += np.asarray(flipped, dtype=np.float32)
    if not norm:
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    if detector:
        feats *= np.asarray(scores, dtype=np.float32)[:, None]
    return feats


def pool_templates(
    features: np.ndarray, templates: np.ndarray, medias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Media pooling (mean), then template pooling (sum), then L2 normalisation.

    Both poolings are linear, so a template feature is ``sum_i f_i / |media(i)|`` over its
    faces, where ``|media(i)|`` counts the faces sharing face i's media *within the template*;
    it is accumulated in one pass (``index_add_``).

    Args:
        features: (N, D) per-face features.
        templates: (N,) template ids.
        medias: (N,) media ids.

    Returns:
        Sorted unique template ids (T,) and float32 (T, D) unit template features (all-zero
        templates stay zero).
    """
    features = np.asarray(features, dtype=np.float32)
    if not (len(features) == len(templates) == len(medias)):
        raise ValueError(
            f"{len(features)} features, {len(templates)} template ids, {len(medias)} media ids"
        )
    ids, t_idx = np.unique(np.asarray(templates, dtype=np.int64), return_inverse=True)
    m_ids, m_idx = np.unique(np.asarray(medias, dtype=np.int64), return_inverse=True)
    key = t_idx.reshape(-1) * len(m_ids) + m_idx.reshape(-1)
    _, k_idx, k_count = np.unique(key, return_inverse=True, return_counts=True)
    weights = torch.from_numpy((1.0 / k_count[k_idx.reshape(-1)]).astype(np.float32))
    rows = torch.from_numpy(t_idx.reshape(-1))
    pooled = torch.zeros(len(ids), features.shape[1], dtype=torch.float32)
    pooled.index_add_(0, rows, torch.from_numpy(features) * weights[:, None])
    out = pooled.numpy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return ids, out / np.where(norms > 0, norms, 1.0)


def score_template_pairs(
    template_ids: np.ndarray,
    template_feats: np.ndarray,
    pairs: np.ndarray,
    batch_size: int = 8192,
    dense_fraction: float = 0.02,
) -> np.ndarray:
    """Cosine scores of template pairs in bounded memory.

    Pairs are grouped by blocks of first templates. A block whose pairs cover at least
    ``dense_fraction`` of its (block x T) score matrix is scored with one matrix product
    (IJB-C's 15.6M pairs over 23k templates cover about 3 %; on one core the product wins
    above about 1.5 %); sparser blocks gather the two features of each pair, ``batch_size``
    pairs at a time. Memory stays below about ``max(batch_size x 2 x D, 2**22)`` floats
    besides the scores.

    Args:
        template_ids: (T,) sorted template ids.
        template_feats: (T, D) unit template features.
        pairs: (P, 2) template ids.
        batch_size: pairs per gathered batch.
        dense_fraction: pair density above which a block is scored by a matrix product.

    Returns:
        (P,) float32 scores.
    """
    template_ids = np.asarray(template_ids)
    pairs = np.asarray(pairs)
    index = np.searchsorted(template_ids, pairs)
    index = np.minimum(index, len(template_ids) - 1)
    bad = (template_ids[index] != pairs).any(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} pairs use templates without faces, e.g. {pairs[bad][0].tolist()}"
        )
    feats = np.ascontiguousarray(template_feats, dtype=np.float32)
    n_t = len(feats)
    order = np.argsort(index[:, 0], kind="stable")
    first, second = index[order, 0], index[order, 1]
    block = max(1, min(n_t, (1 << 22) // max(n_t, 1)))  # block x T scores <= 16 MB
    bounds = np.searchsorted(first, np.arange(0, n_t + block, block))
    out = np.empty(len(pairs), dtype=np.float32)
    for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi == lo:
            continue
        start = b * block
        if hi - lo >= dense_fraction * block * n_t:
            sim = feats[start : start + block] @ feats.T  # (block, T)
            out[order[lo:hi]] = sim[first[lo:hi] - start, second[lo:hi]]
            continue
        for s in range(lo, hi, batch_size):
            e = min(s + batch_size, hi)
            out[order[s:e]] = np.einsum("ij,ij->i", feats[first[s:e]], feats[second[s:e]])
    return out


def ijb_verification(
    emb: IJBEmbeddings,
    flip: bool = True,
    norm: bool = True,
    detector: bool = True,
    fars: tuple[float, ...] = FAR_TARGETS,
    batch_size: int = 8192,
    return_scores: bool = False,
) -> dict[str, Any]:
    """The 1:1 protocol for one switch combination.

    Returns:
        ``{"mode", "flip", "norm", "detector", "tar_at_far": {far: tar}, "pairs", "mated",
        "templates", "faces"}``, plus ``"scores"`` (P,) when ``return_scores``.
    """
    feats = ijb_face_features(emb.plain, emb.flipped, emb.scores, flip, norm, detector)
    ids, tfeats = pool_templates(feats, emb.templates, emb.medias)
    scores = score_template_pairs(ids, tfeats, emb.pairs, batch_size)
    result: dict[str, Any] = {
        "mode": mode_name(flip, norm, detector),
        "flip": flip,
        "norm": norm,
        "detector": detector,
        "tar_at_far": tar_at_far(scores, emb.labels, fars),
        "pairs": int(len(scores)),
        "mated": int(np.sum(emb.labels)),
        "templates": int(len(ids)),
        "faces": int(len(feats)),
    }
    if return_scores:
        result["scores"] = scores
    return result


def thin_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A ROC reduced to about ``points`` points spread evenly on a log-FAR axis (for plots)."""
    if len(fpr) <= points:
        return fpr, tpr
    lo = max(float(fpr[fpr > 0].min()) if (fpr > 0).any() else 1e-12, 1e-12)
    grid = np.geomspace(lo, 1.0, points)
    idx = np.unique(np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1))
    return fpr[idx], tpr[idx]


def ijb_all_modes(
    emb: IJBEmbeddings,
    modes: tuple[tuple[bool, bool, bool], ...] = IJB_MODES,
    fars: tuple[float, ...] = FAR_TARGETS,
    batch_size: int = 8192,
    roc_points: int = 1000,
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The protocol under several (flip, norm, detector) combinations (all 8 by default).

    Returns:
        Results keyed by mode name (``N1D1F1``, ...) and thinned ROC curves ``(fpr, tpr)``.
    """
    results, curves = {}, {}
    for flip, norm, det in modes:
        r = ijb_verification(emb, flip, norm, det, fars, batch_size, return_scores=True)
        curves[r["mode"]] = thin_roc(*roc_curve(r.pop("scores"), emb.labels), points=roc_points)
        results[r["mode"]] = r
    return results, curves


@torch.no_grad()
def embed_ijb(
    model: nn.Module,
    meta: Any,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    workers: int = 4,
    progress: bool = False,
) -> IJBEmbeddings:
    """Align and embed every face of an IJB set, with and without the horizontal flip.

    Faces are read, aligned and embedded one batch at a time; only the (N, D) embeddings are
    kept. Models that need keypoints get the aligned 5 points (flipped for the flipped face).

    Args:
        model: maps (B, 3, 112, 112) in [-1, 1] (+ keypoints) to (B, D).
        meta: an :class:`lafslib.data.ijb.IJBMeta`.
        batch_size: faces per forward pass.
        device: where the model runs.
        workers: decoding threads.
        progress: show a tqdm bar.
    """
    from tqdm import tqdm

    from lafslib.data.ijb import load_aligned_faces
    from lafslib.evaluation.embed import embed_images, flip_keypoints

    n = len(meta)
    plain: np.ndarray | None = None
    flipped: np.ndarray | None = None
    for s in tqdm(range(0, n, batch_size), desc=f"embed {meta.name}", disable=not progress):
        idx = range(s, min(s + batch_size, n))
        images, kp = load_aligned_faces(meta, idx, workers=workers)
        kp_flip = flip_keypoints(torch.from_numpy(kp)).numpy()
        a = embed_images(model, images, len(images), False, device, kp)
        b = embed_images(model, images[:, :, ::-1], len(images), False, device, kp_flip)
        if plain is None or flipped is None:
            plain = np.empty((n, a.shape[1]), dtype=np.float32)
            flipped = np.empty((n, a.shape[1]), dtype=np.float32)
        plain[s : s + len(a)] = a
        flipped[s : s + len(b)] = b
    if plain is None or flipped is None:
        raise ValueError(f"{meta.root}: no faces to embed")
    return IJBEmbeddings(
        plain, flipped, meta.scores, meta.templates, meta.medias, meta.pairs, meta.labels
    )


def evaluate_ijb(
    model: nn.Module,
    root: str | os.PathLike[str],
    name: str = "IJBC",
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    modes: tuple[tuple[bool, bool, bool], ...] = IJB_MODES,
    fars: tuple[float, ...] = FAR_TARGETS,
    workers: int = 4,
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Embed an IJB folder with ``model`` and run the 1:1 protocol under ``modes``.

    Returns:
        A JSON-ready dict ``{"name", "faces", "templates", "pairs", "mated", "seconds",
        "modes": {mode: result}}`` and the ROC curves keyed by mode.
    """
    from lafslib.data.ijb import load_ijb_meta

    t0 = time.time()
    meta = load_ijb_meta(root, name)
    emb = embed_ijb(model, meta, batch_size, device, workers, progress)
    results, curves = ijb_all_modes(emb, modes, fars)
    first = next(iter(results.values()))
    report = {
        "name": name,
        "faces": first["faces"],
        "templates": first["templates"],
        "pairs": first["pairs"],
        "mated": first["mated"],
        "seconds": round(time.time() - t0, 2),
        "modes": {
            k: {key: v[key] for key in ("flip", "norm", "detector", "tar_at_far")}
            for k, v in results.items()
        },
    }
    return report, curves
