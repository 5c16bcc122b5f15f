"""``lafs embed``, ``lafs verify`` and ``lafs search`` with a tiny export on synthetic faces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lafslib.cli import main
from lafslib.evaluation.identity import model_identity
from lafslib.models import create_model, save_export


@pytest.fixture()
def tiny(tmp_path: Path, face_folder) -> tuple[Path, Path]:
    torch.manual_seed(0)
    export = save_export(create_model("mobilefacenet_test").eval(), tmp_path / "export")
    face_folder(tmp_path / "faces", identities=3, per_identity=3)
    return export, tmp_path / "faces"


def test_embed_then_search_from_the_command_line(tiny, tmp_path, capsys) -> None:
    export, faces = tiny
    out = tmp_path / "e.npy"
    assert main(["embed", str(faces), str(out), "--model", str(export), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "embedded 9 faces of 9 photos (aligned crops) into" in printed
    assert json.loads(out.with_suffix(".json").read_text())["model_id"] == model_identity(export)
    assert main(["embed", str(faces), str(out), "--model", str(export), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    argv = ["search", str(out), str(faces), "--model", str(export), "-k", "2", "--show", "-1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("id0/0.png -> id0/0.png (1.0000), ")  # other sides: itself first
    assert "searched 9 probe faces in 9 gallery faces (top 2)" in lines[-2]
    assert main(["search", str(faces), str(out)]) == 2
    assert "--model is needed" in capsys.readouterr().err


def test_verify_reads_a_report_threshold_and_passes_the_backend_down(tiny, tmp_path, capsys):
    export, faces = tiny
    entry = {"similarity": 0.5, "distance": 1.0, "far": 1e-3, "tar": 0.9}
    report = {
        "model": str(export),
        "model_id": model_identity(export),
        "flip": False,
        "results": {"lfw": {"pairs": 6000, "thresholds": {"0.001": entry}}},
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    a, b = faces / "id0" / "0.png", faces / "id1" / "0.png"
    base = ["verify", str(a), str(a), "--model", str(export), "--aligned"]
    assert main([*base, "--threshold", f"{tmp_path / 'report.json'}@1e-3"]) == 0
    out = capsys.readouterr().out
    assert "similarity: 1.0000 (cosine; flip test off; torch)" in out
    assert "threshold: 0.5000 (similarity at FAR=0.001 on lfw, TAR 90.00%;" in out
    assert out.rstrip().endswith("decision: same person")
    assert main(["verify", str(a), str(b), "--model", str(export), "--aligned"]) == 0
    assert "decision: none (give --threshold" in capsys.readouterr().out
    assert main([*base, "--backend", "onnxruntime"]) == 2
    assert "no model.onnx" in capsys.readouterr().err
