"""End-to-end verification on raw photos: the real MobileFaceNet through ``FaceEmbedder``.

The 80 raw, unaligned CelebA photos of ``../shared/data/celeba-raw-mini`` (20 people x 4) go
through the bundled YuNet detector, ArcFace alignment and the MS1M MobileFaceNet (converted
with ``lafs convert``); the largest face of each photo is kept. All 3,160 pairs (120 of one
person) are scored by cosine similarity: 10-fold accuracy (pairs in a seeded random order, the
insightface protocol on them), TAR@FAR, the similarity thresholds at FAR 1e-2 / 1e-3, the ROC
(``benchmarks/results/faceembedder_roc.png``) and leave-one-out rank-1 identification, with
and without the flip test, plus the time per photo of each stage. With ``--lfw-report`` (a
``lafs eval`` report of the same export on LFW) the LFW threshold at FAR=1e-3 is also applied to
these pairs: how a threshold measured on aligned LFW faces transfers to raw photos.

Usage: python benchmarks/bench_faceembedder.py [--threads 2] [--export DIR] [--lfw-report JSON]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED_DATA, markdown_table, publish_result  # noqa: E402

SHARED_MODELS = Path(os.environ.get("LAFS_SHARED_MODELS", SHARED_DATA.parent / "models"))
MOBILEFACENET = SHARED_MODELS / "mobilefacenet-ms1m" / "mobilefacenet.pt"


def _pairs(labels: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarities and same-person flags of every pair i < j, in a seeded random order."""
    i, j = np.triu_indices(len(labels), 1)
    order = np.random.default_rng(0).permutation(len(i))
    i, j = i[order], j[order]
    sims = np.sum(vectors[i].astype(np.float64) * vectors[j], axis=1)
    return sims, labels[i] == labels[j]


def _scores(labels: np.ndarray, vectors: np.ndarray, lfw: Any) -> dict[str, Any]:
    from lafslib.evaluation.verification import (
        roc_curve,
        tar_at_far,
        thresholds_at_far,
        verification_10fold,
    )

    sims, same = _pairs(labels, vectors)
    folds = verification_10fold(None, same, distances=2.0 - 2.0 * sims)
    fpr, tpr = roc_curve(sims, same)
    sim = vectors @ vectors.T - 10 * np.eye(len(vectors))
    out = {
        "pairs": int(len(same)),
        "same_pairs": int(same.sum()),
        "accuracy": folds["accuracy"],
        "accuracy_std": folds["accuracy_std"],
        "auc": float(np.trapezoid(tpr, fpr)),
        "tar_at_far": tar_at_far(sims, same, (1e-3, 1e-2, 1e-1)),
        "thresholds": thresholds_at_far(sims, same, (1e-2, 1e-3)),
        "rank1": float(np.mean(labels[sim.argmax(1)] == labels)),
        "roc": (fpr, tpr),
    }
    if lfw is not None:
        accept = sims >= lfw.value
        out["lfw_threshold"] = {
            "value": lfw.value,
            "tar": float(accept[same].mean()),
            "far": float(accept[~same].mean()),
            "accuracy": float(np.mean(accept == same)),
        }
    return out


def _run(export: Path, photos: list[Path], flip: bool, lfw_report: str | None) -> dict[str, Any]:
    from lafslib.inference import FaceEmbedder
    from lafslib.inference.embedder import PreparedFaces, prepare_faces
    from lafslib.io import read_image

    embedder = FaceEmbedder(export, flip=flip, max_faces=1, batch_size=80)
    lfw = None
    if lfw_report:
        from lafslib.inference.thresholds import load_threshold

        lfw = load_threshold(f"{lfw_report}@1e-3", embedder.identity)
    embedder.get(photos[:2])  # warm-up: detector built, first forward
    t0 = time.perf_counter()
    images = [read_image(p) for p in photos]
    t1 = time.perf_counter()
    parts = [prepare_faces(im, embedder.detector, embedder.input_size, 1) for im in images]
    t2 = time.perf_counter()
    faces = PreparedFaces.concat(parts)
    vectors = embedder.embed_aligned(faces.crops, faces.keypoints)
    t3 = time.perf_counter()
    found = [len(p.scores) for p in parts]
    if min(found) == 0:
        missing = [str(p) for p, n in zip(photos, found) if n == 0]
        raise SystemExit(f"no face found in {missing}")
    labels = np.array([p.parent.name for p in photos])
    out = _scores(labels, vectors, lfw)
    out.update(
        {
            "photos": len(photos),
            "read_ms": 1000 * (t1 - t0) / len(photos),
            "detect_align_ms": 1000 * (t2 - t1) / len(photos),
            "embed_ms": 1000 * (t3 - t2) / len(photos),
            "total_ms": 1000 * (t3 - t0) / len(photos),
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export", help="a converted MobileFaceNet export (default: convert now)")
    parser.add_argument("--lfw-report", help="'lafs eval' report.json of the export on LFW")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from lafslib.evaluation.report import plot_roc
    from lafslib.models.convert import convert_to_export

    photos = sorted((SHARED_DATA / "celeba-raw-mini").glob("*/*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        export = (
            Path(args.export)
            if args.export
            else convert_to_export(MOBILEFACENET, Path(tmp) / "mfn")[0]
        )
        runs = {flip: _run(export, photos, flip, args.lfw_report) for flip in (False, True)}
    plot_roc(
        {f"flip {'on' if k else 'off'}": v.pop("roc") for k, v in runs.items()},
        RESULTS / "faceembedder_roc.png",
    )
    rows = []
    for flip, r in runs.items():
        tar = r["tar_at_far"]
        thr = r["thresholds"]
        rows.append(
            [
                "on" if flip else "off",
                f"{100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}",
                f"{r['auc']:.4f}",
                f"{100 * tar['0.001']:.1f} / {100 * tar['0.01']:.1f} / {100 * tar['0.1']:.1f}",
                f"{thr['0.01']['similarity']:.3f} / {thr['0.001']['similarity']:.3f}",
                f"{100 * r['rank1']:.2f}",
                f"{r['detect_align_ms']:.1f} + {r['embed_ms']:.1f} = {r['total_ms']:.1f}",
            ]
        )
    table = markdown_table(
        [
            "flip test",
            "accuracy (10-fold, %)",
            "ROC AUC",
            "TAR@FAR 1e-3 / 1e-2 / 1e-1 (%)",
            "threshold at FAR 1e-2 / 1e-3",
            "rank-1 (%)",
            "ms per photo: detect+align + embed = total (with read)",
        ],
        rows,
    )
    off = runs[False]
    notes = (
        f"{off['photos']} raw CelebA photos of 20 people (`celeba-raw-mini`, at most 640 px), "
        f"every photo gave a face; {off['pairs']} pairs ({off['same_pairs']} of one person: "
        "with 96% of pairs of two people, accuracy is high by construction, TAR@FAR and the "
        "AUC say more). "
        "YuNet (bundled, score >= 0.7) finds the faces, the largest per photo is aligned to the "
        "ArcFace template and embedded by the MS1M MobileFaceNet (`lafs convert` of "
        "`../shared/models/mobilefacenet-ms1m`). Accuracy: insightface's 10-fold protocol on "
        "the pairs in a seeded random order; thresholds are cosine similarities over all pairs "
        "(what `report.json` records); rank-1: each photo's nearest other photo, leave-one-out. "
        "ROC: `benchmarks/results/faceembedder_roc.png`. Times per photo on the CPU, "
        f"{args.threads} threads, the whole set in one batch, on a 2-core machine shared with "
        "other jobs (they vary up to 2x between runs)."
    )
    if "lfw_threshold" in off:
        t = off["lfw_threshold"]
        notes += (
            f" LFW's threshold at FAR=1e-3 ({t['value']:.3f}, `lafs eval --no-flip` on the "
            f"6,000 LFW pairs) applied to these pairs without the flip test: TAR "
            f"{100 * t['tar']:.1f}%, FAR {100 * t['far']:.2f}%, accuracy {100 * t['accuracy']:.2f}%."
        )
    publish_result(
        "faceembedder",
        "Raw photos end to end: FaceEmbedder (YuNet + MobileFaceNet) on celeba-raw-mini",
        table,
        {("flip" if k else "no_flip"): v for k, v in runs.items()},
        notes,
    )


if __name__ == "__main__":
    main()
