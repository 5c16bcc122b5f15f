"""1:1 verification: the insightface 10-fold ``.bin`` protocol, ROC and TAR@FAR.

Protocol (insightface ``eval/verification.py``): embeddings of each image and its horizontal
flip are summed and L2-normalised; the distance of a pair is the squared L2 distance; the
pairs are split into 10 folds in order (KFold without shuffling); for each fold the threshold
in ``0, 0.01, ..., 3.99`` that maximises accuracy on the other 9 folds is applied to it; the
accuracy is reported as mean and std over folds. VAL@FAR=1e-3 interpolates, on the 9 training
folds, the threshold in ``0, 0.001, ..., 3.999`` at which the false accept rate is 1e-3, and
measures the true accept rate on the test fold.

The VAL threshold equals insightface's ``interp1d(far_train, thresholds, kind="slinear")`` as
it runs under the SciPy it was written for (<= 1.8): linear interpolation between the last
threshold whose train FAR is <= 1e-3 and the next threshold, i.e. ``np.interp`` on the sorted
curve. Current SciPy rejects that call (the FAR curve has plateaus of repeated values,
insightface issues #2152 / #2290); lafslib computes the same value without SciPy.

The decision thresholds that ``lafs verify`` uses come from all pairs pooled
(:func:`thresholds_at_far`): the cosine similarity at which the false accept rate is 1e-2, 1e-3
or 1e-4.

Everything is vectorised with sorted distances and ``searchsorted`` (no Python loop over
thresholds).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "kfold_indices",
    "pair_distances",
    "verification_10fold",
    "tar_at_far",
    "roc_curve",
    "evaluate_bin",
    "evaluate_embeddings",
    "pair_similarities",
    "thresholds_at_far",
    "FAR_TARGETS",
    "THRESHOLD_FARS",
]

FAR_TARGETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
THRESHOLD_FARS = (1e-2, 1e-3, 1e-4)


def kfold_indices(n: int, n_folds: int = 10) -> list[np.ndarray]:
    """Test indices of each fold, in order (sklearn ``KFold(shuffle=False)`` sizes)."""
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(n_folds)]


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distances between rows ``2i`` and ``2i+1`` after L2 normalisation."""
    emb = np.asarray(embeddings, dtype=np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return np.sum((emb[0::2] - emb[1::2]) ** 2, axis=1)


def pair_similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarities between rows ``2i`` and ``2i+1`` (``1 - d / 2`` of
    :func:`pair_distances`): the score ``lafs verify`` and :class:`~lafslib.FaceEmbedder`
    compare with a threshold."""
    return 1.0 - pair_distances(embeddings) / 2.0


def _counts(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per threshold: true accepts and false accepts (``dist < threshold``), #same, #diff."""
    pos = np.sort(dist[same])
    neg = np.sort(dist[~same])
    tp = np.searchsorted(pos, thresholds, side="left")
    fp = np.searchsorted(neg, thresholds, side="left")
    return tp, fp, len(pos), len(neg)


def _interp_threshold(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """Threshold at which the train FAR reaches ``target`` (insightface's ``calculate_val``).

    Args:
        far: (T,) false accept rates, non-decreasing along ``thresholds``.
        thresholds: (T,) increasing grid.
        target: FAR target.

    Returns:
        Linear interpolation between the last threshold with ``far <= target`` and the next
        one (``np.interp(target, far, thresholds)``); 0 when ``far`` stays below ``target``.
    """
    if far.max() < target:
        return 0.0
    j = int(np.searchsorted(far, target, side="right")) - 1  # last grid point with far <= target
    j = min(max(j, 0), len(far) - 2)
    return float(np.interp(target, far[j : j + 2], thresholds[j : j + 2]))


def verification_10fold(
    embeddings: np.ndarray | None,
    issame: np.ndarray,
    n_folds: int = 10,
    far_target: float = 1e-3,
    distances: np.ndarray | None = None,
) -> dict[str, Any]:
    """The insightface 10-fold protocol.

    Args:
        embeddings: (2P, D) embeddings (image + flip already summed); pairs are rows 2i, 2i+1.
        issame: (P,) booleans.
        n_folds: folds (10).
        far_target: FAR for VAL (1e-3).
        distances: precomputed (P,) squared distances instead of embeddings.

    Returns:
        accuracy mean/std and per fold, best thresholds, VAL/std/FAR (and per fold, with the
        interpolated FAR-target thresholds), mean ROC over folds (tpr, fpr).
    """
    issame = np.asarray(issame, dtype=bool)
    dist = pair_distances(embeddings) if distances is None else np.asarray(distances, np.float64)
    if len(dist) != len(issame):
        raise ValueError(f"{len(dist)} pairs of embeddings but {len(issame)} labels")
    thr_acc = np.arange(0, 4, 0.01)
    thr_val = np.arange(0, 4, 0.001)
    folds = kfold_indices(len(dist), n_folds)
    total = _counts(dist, issame, thr_acc)
    total_v = _counts(dist, issame, thr_val)
    acc, best, val, far, val_thr, tprs, fprs = [], [], [], [], [], [], []
    for test in folds:
        d, s = dist[test], issame[test]
        tp_t, fp_t, np_t, nn_t = _counts(d, s, thr_acc)
        tp_r, fp_r = total[0] - tp_t, total[1] - fp_t
        np_r, nn_r = total[2] - np_t, total[3] - nn_t
        acc_train = (tp_r + (nn_r - fp_r)) / (np_r + nn_r)
        i = int(np.argmax(acc_train))
        best.append(thr_acc[i])
        acc.append((tp_t[i] + nn_t - fp_t[i]) / len(test))
        tprs.append(tp_t / np_t if np_t else np.zeros_like(tp_t, dtype=float))
        fprs.append(fp_t / nn_t if nn_t else np.zeros_like(fp_t, dtype=float))
        tpv_t, fpv_t, npv_t, nnv_t = _counts(d, s, thr_val)
        far_train = (total_v[1] - fpv_t) / (total_v[3] - nnv_t)
        threshold = _interp_threshold(far_train, thr_val, far_target)
        val_thr.append(threshold)
        ta = np.sum((d < threshold) & s)
        fa = np.sum((d < threshold) & ~s)
        val.append(ta / npv_t if npv_t else 0.0)
        far.append(fa / nnv_t if nnv_t else 0.0)
    return {
        "accuracy": float(np.mean(acc)),
        "accuracy_std": float(np.std(acc)),
        "fold_accuracy": [float(a) for a in acc],
        "best_thresholds": [float(t) for t in best],
        "val": float(np.mean(val)),
        "val_std": float(np.std(val)),
        "far": float(np.mean(far)),
        "fold_val": [float(v) for v in val],
        "fold_far": [float(f) for f in far],
        "val_thresholds": val_thr,
        "tpr": np.mean(tprs, axis=0).tolist(),
        "fpr": np.mean(fprs, axis=0).tolist(),
    }


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every distinct score threshold (higher score = more similar)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = np.cumsum(~y)[distinct]
    tpr = np.r_[0, tps / max(y.sum(), 1)]
    fpr = np.r_[0, fps / max((~y).sum(), 1)]
    return fpr, tpr


def tar_at_far(
    scores: np.ndarray, labels: np.ndarray, fars: tuple[float, ...] = FAR_TARGETS
) -> dict[str, float | None]:
    """TAR at each FAR target: the largest TAR on the ROC whose FAR does not exceed the target.

    Targets below ``1 / #negatives`` cannot be measured and map to None.
    """
    fpr, tpr = roc_curve(scores, labels)
    n_neg = int((~np.asarray(labels, dtype=bool)).sum())
    out: dict[str, float | None] = {}
    for target in fars:
        if n_neg == 0 or target < 1.0 / n_neg:
            out[f"{target:g}"] = None
            continue
        ok = fpr <= target + 1e-12
        out[f"{target:g}"] = float(tpr[ok].max())
    return out


def thresholds_at_far(
    scores: np.ndarray, labels: np.ndarray, fars: tuple[float, ...] = THRESHOLD_FARS
) -> dict[str, dict[str, float] | None]:
    """Decision thresholds on similarity scores at FAR targets, over all pairs (folds pooled).

    A pair is accepted (same person) when ``score >= threshold``. For each target the
    threshold admits at most ``floor(target * #negatives)`` negative pairs: it lies halfway
    between the highest negative score that must be rejected and the next higher score of any
    pair, so that it changes neither count on these pairs.

    Args:
        scores: (P,) similarities (higher = more similar), e.g. :func:`pair_similarities`.
        labels: (P,) booleans, True for pairs of one person.
        fars: FAR targets.

    Returns:
        Per target (key ``f"{far:g}"``): ``similarity`` (the threshold), ``distance`` (the same
        threshold as a squared L2 distance of unit vectors, ``2 - 2 * similarity``), and the
        ``far`` and ``tar`` it gives on these pairs; None where the target is below
        ``1 / #negatives`` (not measurable on so few pairs).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.shape} scores but {labels.shape} labels")
    neg = np.sort(scores[~labels])[::-1]  # highest first
    pos = scores[labels]
    distinct = np.unique(scores)
    out: dict[str, dict[str, float] | None] = {}
    for target in fars:
        if len(neg) == 0 or target < 1.0 / len(neg):
            out[f"{target:g}"] = None
            continue
        allowed = int(np.floor(target * len(neg) + 1e-9))
        if allowed >= len(neg):
            threshold = float(distinct[0])  # every pair accepted
        else:
            rejected = neg[allowed]
            above = distinct[distinct > rejected]
            threshold = float((rejected + above[0]) / 2 if len(above) else rejected + 1e-6)
        out[f"{target:g}"] = {
            "similarity": threshold,
            "distance": 2.0 - 2.0 * threshold,
            "far": float(np.mean(neg >= threshold)),
            "tar": float(np.mean(pos >= threshold)) if len(pos) else 0.0,
        }
    return out


def evaluate_bin(
    model: nn.Module,
    bin_path: str | os.PathLike[str],
    batch_size: int = 128,
    flip: bool = True,
    device: str | torch.device = "cpu",
    keypoints: np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Embed a ``.bin`` verification set with ``model`` and run the 10-fold protocol.

    Also usable from training loops as a periodic monitor. ``keypoints`` (2P, 5, 2) in [0, 1]
    are fed to models that need them (the ArcFace template when None).
    """
    from lafslib.data.verification import load_bin
    from lafslib.evaluation.embed import embed_images

    images, issame = load_bin(bin_path)
    emb = embed_images(model, images, batch_size, flip, device, keypoints, progress=progress)
    return evaluate_embeddings(emb, issame)


def evaluate_embeddings(embeddings: np.ndarray, issame: np.ndarray) -> dict[str, Any]:
    """10-fold protocol, plus TAR@FAR and the similarity thresholds at FAR 1e-2, 1e-3, 1e-4
    (:func:`thresholds_at_far`) over all pairs, from (2P, D) embeddings."""
    result = verification_10fold(embeddings, issame)
    result["tar_at_far"] = tar_at_far(-pair_distances(embeddings), issame)
    result["thresholds"] = thresholds_at_far(pair_similarities(embeddings), issame)
    result["pairs"] = int(len(issame))
    return result
