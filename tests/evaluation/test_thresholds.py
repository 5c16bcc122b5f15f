"""Decision thresholds at FAR targets over all pairs, and their place in ``report.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lafslib.cli import main
from lafslib.evaluation.identity import model_identity, same_model
from lafslib.evaluation.verification import pair_similarities, thresholds_at_far
from lafslib.models import create_model, save_export


def test_threshold_admits_at_most_the_target_share_of_negatives() -> None:
    rng = np.random.default_rng(0)
    neg = rng.normal(0.1, 0.1, 2000)
    pos = rng.normal(0.6, 0.1, 500)
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(500, bool), np.zeros(2000, bool)]
    table = thresholds_at_far(scores, labels)
    assert table["0.0001"] is None  # 1e-4 < 1 / 2000 negatives: not measurable
    for far, allowed in (("0.01", 20), ("0.001", 2)):
        t = table[far]["similarity"]
        assert int(np.sum(neg >= t)) == allowed  # exactly the allowed false accepts
        top = np.sort(neg)[::-1]
        assert (
            top[allowed] < t <= top[allowed - 1]
        )  # between the last admitted and the first kept out
        assert table[far]["far"] == pytest.approx(allowed / 2000)
        assert table[far]["tar"] == pytest.approx(np.mean(pos >= t))
        assert table[far]["distance"] == pytest.approx(2 - 2 * t)
    assert table["0.01"]["similarity"] < table["0.001"]["similarity"]


def test_threshold_with_no_false_accept_allowed_lies_above_every_negative() -> None:
    scores = np.array([0.9, 0.8, 0.5, 0.2, 0.1])
    labels = np.array([True, True, False, False, False])
    t = thresholds_at_far(scores, labels, fars=(0.34,))["0.34"]  # floor(0.34 * 3) = 1
    assert 0.2 < t["similarity"] < 0.5 and t["far"] == pytest.approx(1 / 3) and t["tar"] == 1.0
    t = thresholds_at_far(scores, labels, fars=(0.335,))["0.335"]  # 1 allowed too
    assert t["similarity"] == pytest.approx(0.35)  # halfway between 0.2 and 0.5
    t = thresholds_at_far(scores, labels, fars=(1 / 3 - 0.01,))
    assert next(iter(t.values())) is None  # below 1 / 3 negatives


def test_pair_similarities_are_cosines() -> None:
    emb = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [0.0, -1.0]])
    np.testing.assert_allclose(pair_similarities(emb), [np.sqrt(0.5), -1.0])


def test_report_records_thresholds_and_model_identity(
    faces_mini: Path, tmp_path: Path, capsys
) -> None:
    save_export(create_model("vit_test").eval(), tmp_path / "export")
    out = tmp_path / "report"
    argv = ["eval", "--model", str(tmp_path / "export"), "--bin", str(faces_mini / "lfw_mini.bin")]
    assert main([*argv, "--out", str(out), "--no-flip"]) == 0
    printed = capsys.readouterr().out
    assert "lfw_mini: similarity thresholds FAR=0.01 n/a, FAR=0.001 n/a, FAR=0.0001 n/a" in printed
    report = json.loads((out / "report.json").read_text())
    identity = model_identity(tmp_path / "export")
    assert report["model_id"] == identity and same_model(identity, report["model_id"])
    assert len(identity["weights_sha256"]) == 64 and identity["name"] == "vit_test"
    # 50 different-person pairs: none of 1e-2, 1e-3, 1e-4 is measurable
    assert report["results"]["lfw_mini"]["thresholds"] == {
        "0.01": None,
        "0.001": None,
        "0.0001": None,
    }
    assert "Decision thresholds" in (out / "report.md").read_text()


def test_identity_tells_weights_apart(tmp_path: Path) -> None:
    save_export(create_model("vit_test").eval(), tmp_path / "a")
    save_export(create_model("vit_test").eval(), tmp_path / "b")  # other random weights
    a, b = model_identity(tmp_path / "a"), model_identity(tmp_path / "b")
    assert a["name"] == b["name"] and not same_model(a, b) and same_model(a, dict(a))
