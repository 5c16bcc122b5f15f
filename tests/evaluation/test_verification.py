"""10-fold protocol against an explicit re-implementation of insightface's procedure and
against insightface's own outputs (../shared/golden/verification.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lafslib.evaluation import pair_distances, roc_curve, tar_at_far, verification_10fold
from lafslib.evaluation.verification import _interp_threshold


def _slinear_threshold(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """insightface's threshold under SciPy <= 1.8, as a loop: interpolate from the last grid
    point whose FAR is <= target to the next one."""
    if far.max() < target:
        return 0.0
    j = max(i for i in range(len(far)) if far[i] <= target)
    if j == len(far) - 1:
        return float(thresholds[j])
    slope = (thresholds[j + 1] - thresholds[j]) / (far[j + 1] - far[j])
    return float(thresholds[j] + slope * (target - far[j]))


def _reference(emb: np.ndarray, issame: np.ndarray, n_folds: int = 10):
    """insightface's calculate_roc / calculate_val, written as loops (sklearn-free KFold)."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = np.sum(np.square(emb[0::2] - emb[1::2]), 1)
    n = len(issame)
    sizes = [n // n_folds + (1 if i < n % n_folds else 0) for i in range(n_folds)]
    starts = np.cumsum([0] + sizes)
    thresholds = np.arange(0, 4, 0.01)

    def acc_at(t, d, s):
        p = d < t
        return (np.sum(p & s) + np.sum(~p & ~s)) / d.size

    accs, vals = [], []
    for f in range(n_folds):
        test = np.arange(starts[f], starts[f + 1])
        train = np.setdiff1d(np.arange(n), test)
        acc_train = [acc_at(t, dist[train], issame[train]) for t in thresholds]
        best = thresholds[int(np.argmax(acc_train))]
        accs.append(acc_at(best, dist[test], issame[test]))
        thr_val = np.arange(0, 4, 0.001)
        far_train = np.array(
            [np.sum((dist[train] < t) & ~issame[train]) / np.sum(~issame[train]) for t in thr_val]
        )
        t = _slinear_threshold(far_train, thr_val, 1e-3)
        p = dist[test] < t
        vals.append(np.sum(p & issame[test]) / np.sum(issame[test]))
    return np.mean(accs), np.std(accs), np.mean(vals), np.std(vals)


@pytest.mark.parametrize("pairs,noise", [(600, 0.9), (1000, 1.3), (253, 0.6)])
def test_matches_reference(pairs: int, noise: float) -> None:
    rng = np.random.default_rng(pairs)
    issame = rng.random(pairs) < 0.5
    base = rng.normal(size=(pairs, 32))
    other = np.where(issame[:, None], base, rng.normal(size=(pairs, 32)))
    emb = np.empty((2 * pairs, 32))
    emb[0::2] = base + noise * rng.normal(size=base.shape)
    emb[1::2] = other + noise * rng.normal(size=base.shape)
    got = verification_10fold(emb, issame)
    acc, acc_std, val, val_std = _reference(emb, issame)
    assert got["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert got["accuracy_std"] == pytest.approx(acc_std, abs=1e-12)
    assert got["val"] == pytest.approx(val, abs=1e-12)
    assert got["val_std"] == pytest.approx(val_std, abs=1e-12)
    assert 0.5 < got["accuracy"] <= 1.0


def test_tar_at_far_and_roc() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    fpr, tpr = roc_curve(scores, labels)
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    np.testing.assert_allclose(tpr[:4], [0, 1 / 3, 2 / 3, 2 / 3])  # 0.9, 0.8 accepted at FAR 0
    tar = tar_at_far(scores, labels, (0.2, 0.01))
    assert tar["0.2"] == pytest.approx(1.0)  # one false accept (0.7) of 5 lets 0.6 in
    assert tar["0.01"] is None  # not measurable with 5 negatives
    labels2 = np.array([1, 0, 1, 1, 0, 0, 0, 0], dtype=bool)
    assert tar_at_far(scores, labels2, (0.2,))["0.2"] == pytest.approx(1.0)


def test_pair_distances_normalise() -> None:
    emb = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(pair_distances(emb), [2.0, 0.0])


def test_interp_threshold_takes_last_point_of_a_plateau() -> None:
    thresholds = np.arange(6) * 0.1
    far = np.array([0.0, 0.0, 0.0, 0.002, 0.002, 0.004])
    # last point with FAR <= 1e-3 is index 2 (0.2); halfway to index 3 (0.3)
    assert _interp_threshold(far, thresholds, 1e-3) == pytest.approx(0.25, abs=1e-15)
    assert _interp_threshold(far, thresholds, 2e-3) == pytest.approx(0.4, abs=1e-15)
    assert _interp_threshold(far, thresholds, 5e-3) == 0.0  # never reached
    assert _interp_threshold(far, thresholds, 4e-3) == pytest.approx(0.5, abs=1e-15)
    rng = np.random.default_rng(0)
    for _ in range(200):
        steps = rng.integers(0, 3, size=49) * (rng.random(49) < 0.3)
        far = np.concatenate([[0.0], np.cumsum(steps)]) / 400.0  # FAR 0 at threshold 0
        target = rng.choice([1e-3, 2.5e-3, 5e-3, float(far[rng.integers(50)])])
        thresholds = np.arange(50) * 0.01
        got = _interp_threshold(far, thresholds, target)
        assert got == _slinear_threshold(far, thresholds, target)
        if far.max() >= target:
            assert got == pytest.approx(float(np.interp(target, far, thresholds)), abs=1e-15)


def test_equals_insightface_golden(golden: Path) -> None:
    """insightface ``evaluate`` (SciPy 1.8.1) on seeded embeddings: every output equal."""
    g = np.load(golden / "verification.npz")
    np.testing.assert_allclose(pair_distances(g["embeddings"]), g["dist"], rtol=0, atol=1e-12)
    got = verification_10fold(g["embeddings"], g["issame"])
    np.testing.assert_allclose(got["val_thresholds"], g["val_thresholds_per_fold"], atol=1e-12)
    np.testing.assert_allclose(got["fold_val"], g["val_per_fold"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(got["fold_far"], g["far_per_fold"], rtol=0, atol=1e-15)
    assert got["val"] == pytest.approx(float(g["val"]), abs=1e-15)  # 0.47333
    assert got["val_std"] == pytest.approx(float(g["val_std"]), abs=1e-15)
    assert got["far"] == pytest.approx(float(g["far"]), abs=1e-15)
    np.testing.assert_allclose(got["fold_accuracy"], g["accuracy"], rtol=0, atol=1e-15)
    assert got["accuracy"] == pytest.approx(float(np.mean(g["accuracy"])), abs=1e-15)
    assert got["accuracy_std"] == pytest.approx(float(np.std(g["accuracy"])), abs=1e-15)
    np.testing.assert_allclose(got["best_thresholds"], g["best_thresholds"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(got["tpr"], g["tpr"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(got["fpr"], g["fpr"], rtol=0, atol=1e-15)
