"""CMC on a constructed gallery with known ranks; few-shot identification on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from lafslib.evaluation.identification import cmc, few_shot_identification, few_shot_split


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
