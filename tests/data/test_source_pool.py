"""Several training sources as one pretraining pool: concatenation, per-source landmarks, and
errors that name the bad source before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from lafslib.config import load_recipe
from lafslib.data import open_pool
from lafslib.errors import ConfigError, DataError, InputNotFoundError
from lafslib.landmarks.store import save_landmarks

DEMO = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "pretrain_demo.yaml"


def test_pool_concatenates_sources_with_their_own_landmarks(tmp_path, face_folder):
    face_folder(tmp_path / "a", identities=2, per_identity=3)
    face_folder(tmp_path / "b", identities=1, per_identity=2)
    # b's landmarks moved by +5 px in a sidecar elsewhere: the pool must use the one given
    keys = [f"id0/{j}.png" for j in range(2)]
    moved = open_pool([tmp_path / "b"]).datasets[0].landmarks
    save_landmarks(tmp_path / "b_moved.csv", keys, np.stack([moved[k] + 5 for k in keys]))
    pool = open_pool([tmp_path / "a", tmp_path / "b"], [None, tmp_path / "b_moved.csv"])
    assert len(pool) == 6 + 2
    first_b = pool.sample(6)
    np.testing.assert_allclose(first_b["landmarks"], moved["id0/0.png"] + 5)
    np.testing.assert_allclose(pool.sample(0)["landmarks"], pool.datasets[0].landmarks["id0/0.png"])
    assert "b (2)" in repr(pool)


def test_a_bad_second_source_is_named(tmp_path, face_folder):
    face_folder(tmp_path / "a", identities=1, per_identity=2)
    with pytest.raises(InputNotFoundError, match="missing_faces"):
        open_pool([tmp_path / "a", tmp_path / "missing_faces"])
    face_folder(tmp_path / "b", identities=1, per_identity=2)
    save_landmarks(tmp_path / "wrong.csv", ["other/0.png"], np.zeros((1, 5, 2), np.float32))
    with pytest.raises(DataError, match="wrong.csv"):
        open_pool([tmp_path / "a", tmp_path / "b"], [None, tmp_path / "wrong.csv"])
    keys = ["id0/0.png", "id0/1.png"]
    save_landmarks(tmp_path / "grid.csv", keys, np.full((2, 4, 2), 50, np.float32))
    with pytest.raises(DataError, match="different landmarks per face"):
        open_pool([tmp_path / "a", tmp_path / "b"], [None, tmp_path / "grid.csv"])


def _recipe(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "r.yaml"
    base = yaml.safe_load(DEMO.read_text())
    base["data"].update(data)
    path.write_text(yaml.safe_dump(base))
    return path


def test_recipe_rules_for_lists_of_sources(tmp_path):
    cfg = load_recipe(_recipe(tmp_path, {"train": ["x", "y.rec"], "landmarks": [None, "l.csv"]}))
    assert cfg.data.train == ["x", "y.rec"] and cfg.data.landmarks == [None, "l.csv"]
    for bad, match in (
        ({"train": ["x", "y"], "landmarks": "l.csv"}, "one sidecar .* per data.train source"),
        ({"train": ["x", "y"], "landmarks": ["l.csv"]}, "one sidecar .* per data.train source"),
        ({"train": "x", "landmarks": ["l.csv"]}, "data.train is one source"),
        ({"train": ["x", "synthetic"]}, "'synthetic' stands alone"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_recipe(_recipe(tmp_path, bad))


def test_pretraining_on_two_sources_and_a_bad_second_source(tmp_path, face_folder):
    from lafslib.engine.pretrain import pretrain

    face_folder(tmp_path / "a", identities=2, per_identity=4)
    face_folder(tmp_path / "b", identities=2, per_identity=2)
    data = {"train": [str(tmp_path / "a"), str(tmp_path / "b")], "batch_size": 4}
    base = yaml.safe_load(DEMO.read_text())
    base["data"].update(data)
    base["run"].update({"output_dir": str(tmp_path / "run"), "max_steps": 2, "log_every": 1})
    base["views"] = {"kind": "lafs", "num_landmarks": 49, "local_views": 2, "local_landmarks": 9}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(base))
    run = pretrain(load_recipe(tmp_path / "two.yaml"))
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "train/loss" in rows[0]
    base["data"]["train"][1] = str(tmp_path / "not_there")
    base["run"]["output_dir"] = str(tmp_path / "run_bad")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(InputNotFoundError, match="not_there"):
        pretrain(load_recipe(tmp_path / "bad.yaml"))
    assert not list((tmp_path / "run_bad").glob("checkpoints/*"))
    metrics = tmp_path / "run_bad" / "metrics.jsonl"
    assert not metrics.exists() or not metrics.read_text().strip()  # no step was taken
