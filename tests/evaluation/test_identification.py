"""CMC on a constructed gallery with known ranks; few-shot identification on real faces;
open-set 1:N (DIR at FPIR) on constructed galleries with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lafslib.evaluation.identification import (
    cmc,
    few_shot_identification,
    few_shot_split,
    fpir_threshold,
    open_set_identification,
)


def test_cmc_known_ranks() -> None:
    # 2-D unit vectors at known angles: probe at angle 0
    def vec(deg: float) -> np.ndarray:
        return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])

    gallery = np.stack([vec(10), vec(20), vec(30), vec(40)])
    labels = np.array([7, 8, 9, 9])
    probes = np.stack([vec(0), vec(0), vec(0)])
    r = cmc(probes, np.array([7, 9, 8]), gallery, labels, ranks=(1, 2, 3))
    assert r["ranks"].tolist() == [1, 3, 2]  # 9's best mate (30 deg) is behind 10 and 20 deg
    assert r["rank_1"] == pytest.approx(1 / 3) and r["rank_2"] == pytest.approx(2 / 3)
    distract = np.stack([vec(5), vec(-5), vec(50)])
    r2 = cmc(probes, np.array([7, 9, 8]), gallery, labels, distract, ranks=(1,), chunk=2)
    assert r2["ranks"].tolist() == [3, 5, 4]
    with pytest.raises(ValueError, match="no gallery entry"):
        cmc(probes, np.array([1, 1, 1]), gallery, labels)


def test_few_shot_split_and_identification() -> None:
    labels = np.repeat(np.arange(20), 5)
    g, p = few_shot_split(labels, shots=2, seed=1)
    assert len(g) == 40 and len(p) == 60 and not set(g) & set(p)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    emb = centres[labels] + 0.3 * rng.normal(size=(100, 16))
    r = few_shot_identification(emb, labels, shots=1)
    assert r["rank_1"] > 0.9 and r["probes"] == 80 and r["identities"] == 20
    noise = few_shot_identification(rng.normal(size=(100, 16)), labels, shots=1)
    assert noise["rank_1"] < 0.3


def _unit(**coords: float) -> np.ndarray:
    """A unit vector in 8-D from named coordinates e0..e6; the rest goes to e7."""
    v = np.zeros(8)
    for k, c in coords.items():
        v[int(k[1:])] = c
    v[7] = np.sqrt(1.0 - np.sum(v**2))
    return v


def test_open_set_known_answers() -> None:
    gallery = np.eye(8)[:4]  # identities 0..3, one entry each
    g_labels = np.array([0, 1, 2, 3])
    # ten non-mated probes (identity 9) whose best gallery score is 0.9, 0.8, ..., 0.0
    nonmated = [_unit(e0=c) for c in np.linspace(0.9, 0.0, 10)]
    mated = [
        _unit(e1=0.85),  # above the FPIR=0.1 threshold (0.8)
        _unit(e2=0.75),  # below 0.8, above the FPIR=0.3 threshold (0.6)
        _unit(e3=0.65, e0=0.7),  # mate at rank 2
    ]
    probes = np.stack(nonmated + mated)
    p_labels = np.array([9] * 10 + [1, 2, 3])
    r = open_set_identification(probes, p_labels, gallery, g_labels, fpirs=(0.01, 0.1, 0.3, 1.0))
    assert r["threshold"]["0.1"] == pytest.approx(0.8)
    assert r["threshold"]["0.3"] == pytest.approx(0.6)
    assert r["threshold"]["0.01"] == pytest.approx(0.9)  # below 1/10: no false positive allowed
    assert r["threshold"]["1"] is None  # everything accepted
    assert r["fpir_achieved"] == pytest.approx({"0.01": 0.0, "0.1": 0.1, "0.3": 0.3, "1": 1.0})
    assert r["dir_at_fpir"] == pytest.approx({"0.01": 0.0, "0.1": 1 / 3, "0.3": 2 / 3, "1": 2 / 3})
    assert r["rank_1"] == pytest.approx(2 / 3) and r["rank_5"] == 1.0
    assert (r["mated"], r["non_mated"], r["identities"]) == (3, 10, 4)
    r2 = open_set_identification(probes, p_labels, gallery, g_labels, fpirs=(1.0,), rank=2)
    assert r2["dir_at_fpir"]["1"] == 1.0


def test_threshold_comes_from_nonmated_probes_only() -> None:
    """Many impostor gallery entries above the mates must not move the threshold: it depends
    on the non-mated probes' best scores alone (the insightface/AdaFace 1:N bug)."""
    gallery = np.stack([np.eye(8)[i] for i in range(6)])
    g_labels = np.arange(6)
    mated = [_unit(**{f"e{i}": 0.9, f"e{(i + 1) % 6}": 0.3}) for i in range(6)]
    nonmated = [_unit(e0=c) for c in (0.5, 0.4, 0.3, 0.2)]
    probes = np.stack(mated + nonmated)
    p_labels = np.r_[np.arange(6), [50, 51, 52, 53]]
    r = open_set_identification(probes, p_labels, gallery, g_labels, fpirs=(0.25,))
    assert r["threshold"]["0.25"] == pytest.approx(0.4)
    assert r["dir_at_fpir"]["0.25"] == 1.0 and r["fpir_achieved"]["0.25"] == 0.25


def test_fpir_threshold_ties_and_errors() -> None:
    top = np.array([0.9, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2])
    t = fpir_threshold(top, 0.1)  # one false positive allowed, but two probes tie at 0.9
    assert t == 0.9 and np.mean(top > t) == 0.0
    assert fpir_threshold(top, 0.2) == 0.5
    assert fpir_threshold(top, 1.0) == -np.inf
    with pytest.raises(ValueError, match="non-mated"):
        fpir_threshold(np.array([]), 0.1)
    with pytest.raises(ValueError, match="fpir"):
        fpir_threshold(top, 1.5)
    with pytest.raises(ValueError, match="non-mated"):
        open_set_identification(np.eye(3), [0, 1, 2], np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="no probe has a mate"):
        open_set_identification(np.eye(3), [5, 6, 7], np.eye(3), [0, 1, 2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_open_set_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(25, 6))
    g_labels = rng.integers(0, 10, 25)  # several entries per identity
    p_labels = rng.integers(0, 16, 60)
    p_labels[:3] = 15  # at least some non-mated ...
    p_labels[3] = g_labels[0]  # ... and some mated
    probes = gallery[np.searchsorted(np.sort(g_labels), p_labels) % 25] + rng.normal(size=(60, 6))
    fpirs = (0.05, 0.1, 0.25, 0.5)
    r = open_set_identification(probes, p_labels, gallery, g_labels, fpirs=fpirs, chunk=7)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    known = set(g_labels.tolist())
    nonmated_top, mate_rank, mate_score = [], [], []
    for p, y in zip(probes, p_labels):
        best = {}
        for g, gy in zip(gallery, g_labels):
            best[gy] = max(best.get(gy, -2.0), cos(p, g))
        if y in known:
            mate_score.append(best[y])
            mate_rank.append(1 + sum(1 for k, v in best.items() if k != y and v > best[y]))
        else:
            nonmated_top.append(max(best.values()))
    for f in fpirs:
        # the lowest candidate threshold (strict acceptance) whose FPIR is within the target
        candidates = sorted(set(nonmated_top) | {-np.inf})
        t = next(c for c in candidates if np.mean([s > c for s in nonmated_top]) <= f + 1e-12)
        expected = np.mean([(k == 1) and (s > t) for k, s in zip(mate_rank, mate_score)])
        assert r["dir_at_fpir"][f"{f:g}"] == pytest.approx(expected)
        assert r["fpir_achieved"][f"{f:g}"] <= f
    assert r["rank_1"] == pytest.approx(np.mean(np.array(mate_rank) == 1))
