"""Evaluation reports: JSON, a Markdown table, and ROC curves as PNG."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.evaluation.verification import evaluate_embeddings, pair_distances, roc_curve

__all__ = ["evaluate_export", "markdown_report", "plot_roc"]


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str]
) -> Path:
    """Plot ROC curves (log-FAR axis) to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, (fpr, tpr) in curves.items():
        keep = fpr > 0
        ax.plot(fpr[keep], tpr[keep], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("ROC")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_report(results: dict[str, dict[str, Any]], model: str) -> str:
    """A Markdown table of verification results."""
    lines = [
        f"# Evaluation of `{model}`",
        "",
        "| set | pairs | accuracy (10-fold) | VAL@FAR=1e-3 | TAR@FAR=1e-3 | TAR@FAR=1e-2 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        tar = r["tar_at_far"]

        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}"

        lines.append(
            f"| {name} | {r['pairs']} | {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f} "
            f"| {100 * r['val']:.2f} +- {100 * r['val_std']:.2f} | {fmt(tar.get('0.001'))} "
            f"| {fmt(tar.get('0.01'))} |"
        )
    return "\n".join(lines) + "\n"


def evaluate_export(
    model_path: str | os.PathLike[str],
    bins: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    batch_size: int = 128,
    flip: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate an exported model on ``.bin`` sets; write report.json, report.md, roc.png."""
    from lafslib.data.verification import load_bin
    from lafslib.evaluation.embed import embed_images
    from lafslib.models import load_export

    if not bins:
        raise ValueError("nothing to evaluate: give at least one --bin file")
    model = load_export(model_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, curves = {}, {}
    for b in bins:
        name = Path(b).stem
        t0 = time.time()
        images, issame = load_bin(b)
        emb = embed_images(model, images, batch_size, flip, device, progress=progress)
        r = evaluate_embeddings(emb, issame)
        del r["tpr"], r["fpr"]  # fold-mean curves; the report keeps the full ROC as a plot
        r["seconds"] = round(time.time() - t0, 2)
        results[name] = r
        curves[name] = roc_curve(-pair_distances(emb), issame)
    report = {"model": str(model_path), "flip": flip, "results": results}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(results, str(model_path)))
    plot_roc(curves, out / "roc.png")
    return report
