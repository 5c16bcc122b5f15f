"""Evaluation reports: JSON, Markdown tables, and ROC curves as PNG.

``evaluate_export`` runs any of: insightface ``.bin`` verification sets, the IJB-B/C 1:1
protocol (all flag combinations; ``roc_ijb.png``) and open-set / closed-set identification of a
probe folder against a gallery folder (labelled folders of aligned 112x112 faces).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.evaluation.verification import evaluate_embeddings, pair_distances, roc_curve

__all__ = [
    "evaluate_export",
    "evaluate_identification_folders",
    "markdown_report",
    "plot_roc",
]


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


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _thresholds_markdown(results: dict[str, dict[str, Any]]) -> list[str]:
    fars = list(next(r["thresholds"] for r in results.values() if "thresholds" in r))
    lines = [
        "",
        "## Decision thresholds (cosine similarity, all pairs pooled)",
        "",
        "Accept a pair as one person when its similarity is at least the threshold; "
        "`lafs verify --threshold report.json@1e-3` reads them. n/a: fewer than 1/FAR "
        "different-person pairs.",
        "",
        "| set | " + " | ".join(f"FAR={f}" for f in fars) + " |",
        "|---|" + "---|" * len(fars),
    ]
    for name, r in results.items():
        cells = []
        for far in fars:
            t = r.get("thresholds", {}).get(far)
            cells.append("n/a" if t is None else f"{t['similarity']:.4f} (TAR {_pct(t['tar'])})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _ijb_markdown(ijb: dict[str, Any]) -> list[str]:
    fars = list(next(iter(ijb["modes"].values()))["tar_at_far"])
    lines = [
        "",
        f"## {ijb['name']} 1:1 verification (TAR@FAR, %)",
        "",
        f"{ijb['faces']} faces, {ijb['templates']} templates, {ijb['pairs']} pairs "
        f"({ijb['mated']} mated). N: keep raw norms, D: detector-score weights, F: flip test; "
        "insightface reports N1D1F1, CVLFace N0D1F1 at FAR=1e-4.",
        "",
        "| mode | " + " | ".join(f"FAR={f}" for f in fars) + " |",
        "|---|" + "---|" * len(fars),
    ]
    for mode, r in ijb["modes"].items():
        lines.append(f"| {mode} | " + " | ".join(_pct(r["tar_at_far"][f]) for f in fars) + " |")
    return lines


def _ident_markdown(ident: dict[str, Any]) -> list[str]:
    fpirs = list(ident["dir_at_fpir"])
    ranks = [k for k in ident if k.startswith("rank_")]
    lines = [
        "",
        "## Identification (1:N, %)",
        "",
        f"{ident['gallery_images']} gallery images of {ident['identities']} identities; "
        f"{ident['mated']} mated and {ident['non_mated']} non-mated probes. DIR: mate at rank "
        f"{ident['rank']} and above the threshold that keeps FPIR at the target (chosen from "
        "the non-mated probes); CMC: mated probes, no threshold.",
        "",
        "| "
        + " | ".join([f"DIR@FPIR={f}" for f in fpirs] + [f"CMC {k[5:]}" for k in ranks])
        + " |",
        "|" + "---|" * (len(fpirs) + len(ranks)),
        "| "
        + " | ".join(
            [_pct(ident["dir_at_fpir"][f]) for f in fpirs] + [_pct(ident[k]) for k in ranks]
        )
        + " |",
    ]
    return lines


def markdown_report(
    results: dict[str, dict[str, Any]],
    model: str,
    ijb: dict[str, Any] | None = None,
    identification: dict[str, Any] | None = None,
    whitening: dict[str, Any] | None = None,
) -> str:
    """Markdown tables of verification (``.bin``), IJB and identification results."""
    lines = [f"# Evaluation of `{model}`", ""]
    if whitening is not None:
        lines += [
            f"Embeddings PCA-whitened on {whitening['images']} faces of `{whitening['folder']}` "
            f"(labels unused; {whitening['skipped']} unreadable skipped; shrink "
            f"{whitening['shrink']}).",
            "",
        ]
    if results:
        lines += [
            "| set | pairs | accuracy (10-fold) | VAL@FAR=1e-3 | TAR@FAR=1e-3 | TAR@FAR=1e-2 |",
            "|---|---|---|---|---|---|",
        ]
    for name, r in results.items():
        tar = r["tar_at_far"]
        lines.append(
            f"| {name} | {r['pairs']} | {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f} "
            f"| {100 * r['val']:.2f} +- {100 * r['val_std']:.2f} | {_pct(tar.get('0.001'))} "
            f"| {_pct(tar.get('0.01'))} |"
        )
    if any("thresholds" in r for r in results.values()):
        lines += _thresholds_markdown(results)
    if ijb is not None:
        lines += _ijb_markdown(ijb)
    if identification is not None:
        lines += _ident_markdown(identification)
    return "\n".join(lines) + "\n"


def _embed_folder(
    model: Any, root: str | os.PathLike[str], batch_size: int, flip: bool, device: str
) -> tuple[np.ndarray, list[str]]:
    """Embeddings and identity names (sub-folder names) of a labelled folder of aligned faces."""
    from lafslib.evaluation.embed import embed_images
    from lafslib.io import list_images, read_image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"identification folder not found: {root}")
    files = [f for f in list_images(root) if "/" in f]
    if not files:
        raise ValueError(f"{root}: no images in identity sub-folders (<root>/<identity>/*.jpg)")
    chunks = []
    for s in range(0, len(files), 1024):
        images = np.stack([read_image(root / f) for f in files[s : s + 1024]])
        chunks.append(embed_images(model, images, batch_size, flip, device))
    return np.concatenate(chunks), [f.split("/", 1)[0] for f in files]


def evaluate_identification_folders(
    model: Any,
    gallery_dir: str | os.PathLike[str],
    probe_dir: str | os.PathLike[str],
    batch_size: int = 128,
    flip: bool = True,
    device: str = "cpu",
    fpirs: tuple[float, ...] = (0.01, 0.1),
    ranks: tuple[int, ...] = (1, 5, 20),
) -> dict[str, Any]:
    """Open-set 1:N identification of a probe folder against a gallery folder.

    Both are labelled folders (``<identity>/<image>``) of aligned faces; identities are matched
    by folder name, and probes of identities absent from the gallery are non-mated. Every
    gallery image is a gallery entry (an identity scores its best entry).
    """
    from lafslib.evaluation.identification import open_set_identification

    gal, gal_names = _embed_folder(model, gallery_dir, batch_size, flip, device)
    pro, pro_names = _embed_folder(model, probe_dir, batch_size, flip, device)
    names = sorted(set(gal_names) | set(pro_names))
    index = {n: i for i, n in enumerate(names)}
    result = open_set_identification(
        pro,
        np.array([index[n] for n in pro_names]),
        gal,
        np.array([index[n] for n in gal_names]),
        fpirs=fpirs,
        ranks=ranks,
    )
    result.update(
        {
            "gallery": str(gallery_dir),
            "probe": str(probe_dir),
            "gallery_images": int(len(gal)),
            "probe_images": int(len(pro)),
        }
    )
    return result


def evaluate_export(
    model_path: str | os.PathLike[str],
    bins: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    batch_size: int = 128,
    flip: bool = True,
    device: str = "cpu",
    progress: bool = True,
    ijb: str | os.PathLike[str] | None = None,
    ijb_name: str = "IJBC",
    ident: str | os.PathLike[str] | None = None,
    probe: str | os.PathLike[str] | None = None,
    workers: int = 4,
    fpirs: tuple[float, ...] = (0.01, 0.1),
    whiten: str | os.PathLike[str] | None = None,
    whiten_shrink: float = 0.0,
    backend: str = "auto",
) -> dict[str, Any]:
    """Evaluate an exported model; write report.json, report.md and ROC curves as PNG.

    ``report.json`` records the model's identity (``model_id``:
    :func:`~lafslib.evaluation.identity.model_identity`) and, per ``.bin`` set, the similarity
    thresholds at FAR 1e-2, 1e-3 and 1e-4 over all pairs (``thresholds``), which
    ``lafs verify --threshold report.json@1e-3`` reads.

    Args:
        model_path: export folder, or a published model ``hf://owner/repo[@revision]``.
        bins: insightface ``.bin`` sets (10-fold protocol; ``roc.png``).
        out_dir: output folder.
        batch_size, flip, device, progress: embedding options (``flip`` applies to ``.bin``
            sets and identification; IJB runs every flag combination).
        ijb: an IJB folder (``meta/`` + ``loose_crop/``); ``roc_ijb.png``.
        ijb_name: ``IJBC`` or ``IJBB`` (the meta file prefix).
        ident, probe: gallery and probe folders for 1:N identification (given together).
        workers: image decoding threads for IJB.
        fpirs: FPIR targets of the identification.
        whiten: a folder of aligned faces (labels unused): every embedding is PCA-whitened as
            fitted on them (:func:`~lafslib.evaluation.whitening.fit_whitening`) before any
            protocol; ``whiten_shrink`` shrinks the eigenvalues towards their mean.
        backend: ``"auto"``, ``"torch"`` or ``"onnxruntime"``
            (:func:`~lafslib.evaluation.runtime.load_embedding_model`).
    """
    from lafslib.data.verification import load_bin
    from lafslib.errors import InputNotFoundError
    from lafslib.evaluation.embed import embed_images
    from lafslib.evaluation.identity import model_identity
    from lafslib.evaluation.runtime import load_embedding_model
    from lafslib.evaluation.whitening import fit_whitening

    if (ident is None) != (probe is None):
        raise ValueError("identification needs both a gallery folder and a probe folder")
    if not bins and ijb is None and ident is None:
        raise ValueError("nothing to evaluate: give --bin files, --ijb or --ident/--probe")
    for path, what in [*((b, ".bin verification set") for b in bins), (ijb, "IJB folder"),
                       (ident, "gallery folder"), (probe, "probe folder"),
                       (whiten, "whitening folder")]:  # fmt: skip
        if path is not None and not Path(path).exists():
            raise InputNotFoundError(f"{what} not found: {path}")
    if whiten_shrink < 0:
        raise ValueError(f"whitening shrink must be >= 0, got {whiten_shrink}")
    model = load_embedding_model(model_path, backend, device)
    whitening = None
    if whiten is not None:
        model, whitening = fit_whitening(model, whiten, whiten_shrink, batch_size, device)
    out = Path(out_dir)
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
    report: dict[str, Any] = {
        "model": str(model_path),
        "model_id": model_identity(model_path),
        "flip": flip,
        "results": results,
    }
    if whitening is not None:
        report["whitening"] = whitening
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs have been read
    if curves:
        plot_roc(curves, out / "roc.png")
    if ijb is not None:
        from lafslib.evaluation.ijb import evaluate_ijb

        report["ijb"], ijb_curves = evaluate_ijb(
            model, ijb, ijb_name, batch_size, device, workers=workers, progress=progress
        )
        plot_roc(ijb_curves, out / "roc_ijb.png")
    if ident is not None and probe is not None:
        t0 = time.time()
        report["identification"] = evaluate_identification_folders(
            model, ident, probe, batch_size, flip, device, fpirs
        )
        report["identification"]["seconds"] = round(time.time() - t0, 2)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(
        markdown_report(
            results,
            str(model_path),
            report.get("ijb"),
            report.get("identification"),
            report.get("whitening"),
        )
    )
    return report
