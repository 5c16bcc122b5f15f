"""benchmarks/gpu_check.py, prepared for a device session, runs end to end on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_smoke_on_cpu(tmp_path: Path, faces_mini: Path) -> None:
    out = tmp_path / "gpu_check.json"
    lfw = faces_mini / "lfw_mini.bin"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
           "--precision", "fp32", "--smoke", "--lfw", str(lfw), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())["data"]
    r = data["ViT-test"]
    assert r["flops_per_step"] > 0 and 0 < r["mfu"] < 1
    assert r["img_per_s_compute"] > 0 and r["img_per_s_with_views"] > 0
    assert r["peak_memory_gib"] is None  # CPU: no device memory to report
    assert [c["step"] for c in data["lfw_curve"]] == [2, 4]
    assert all(0 <= c["lfw_accuracy"] <= 1 for c in data["lfw_curve"])
