"""``lafs eval`` on the faces-mini .bin: JSON report, Markdown table, ROC PNG."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from lafslib.cli import main
from lafslib.data import load_bin
from lafslib.evaluation import embed_images, evaluate_bin
from lafslib.models import create_model, save_export


def test_lafs_eval_report(faces_mini: Path, tmp_path: Path) -> None:
    model = create_model("vit_test").eval()
    save_export(model, tmp_path / "export")
    out = tmp_path / "report"
    bin_path = faces_mini / "lfw_mini.bin"
    assert (
        main(
            ["eval", "--model", str(tmp_path / "export"), "--bin", str(bin_path), "--out", str(out)]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    r = report["results"]["lfw_mini"]
    assert r["pairs"] == 100 and 0 <= r["accuracy"] <= 1 and len(r["fold_accuracy"]) == 10
    assert "| lfw_mini | 100 |" in (out / "report.md").read_text()
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    direct = evaluate_bin(model, bin_path)
    assert direct["accuracy"] == r["accuracy"]


def test_flip_test_sums_both_views(faces_mini: Path) -> None:
    images, _ = load_bin(faces_mini / "lfw_mini.bin")
    model = create_model("vit_test").eval()
    plain = embed_images(model, images[:4], flip=False)
    flipped = embed_images(model, images[:4, :, ::-1].copy(), flip=False)
    both = embed_images(model, images[:4], batch_size=3, flip=True)
    np.testing.assert_allclose(both, plain + flipped, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        x = torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float() / 127.5 - 1
        np.testing.assert_allclose(model(x).numpy(), plain[:2], rtol=1e-4, atol=1e-5)


def test_read_only_faces_embed_without_a_warning(faces_mini: Path) -> None:
    """A memory-mapped (read-only) set embeds as the same set in memory, with no warning."""
    images, _ = load_bin(faces_mini / "lfw_mini.bin")
    model = create_model("vit_test_kprpe").eval()
    template = np.broadcast_to(
        np.float32([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]), (6, 5, 2)
    )
    frozen = images[:6].copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_only = embed_images(model, frozen, batch_size=4, keypoints=template)
    writable = embed_images(model, images[:6].copy(), batch_size=4, keypoints=template.copy())
    np.testing.assert_array_equal(read_only, writable)
