"""``make demo`` path: a short pretraining run that writes a run directory and an export."""

from __future__ import annotations

import json
from pathlib import Path

from lafslib import demo


def test_demo_on_synthetic_faces(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAFS_SHARED_DATA", str(tmp_path / "absent"))
    summary = demo.run(tmp_path / "demo", steps=2)
    assert summary["data"].startswith("synthetic")
    assert summary["pretrain_steps"] == 2 and summary["finetune_steps"] == 2
    run = Path(summary["pretrain_run"])
    assert (run / "config.yaml").is_file() and any((run / "tb").iterdir())
    assert (Path(summary["pretrain_export"]) / "model.safetensors").is_file()
    assert (Path(summary["finetune_export"]) / "model.safetensors").is_file()
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["finetune_steps"] == 2
    assert Path(summary["report"]).is_file() and 0 <= summary["verification_accuracy"] <= 1
