"""Evaluation speed: the 10-fold protocol on 6,000 pairs from embeddings, one core.

Usage: python benchmarks/bench_eval.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_result  # noqa: E402

from lafslib.evaluation import roc_curve, tar_at_far, verification_10fold  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pairs = 6000
    issame = np.repeat(np.tile([True, False], 10), 300)
    base = rng.normal(size=(pairs, 512))
    other = np.where(issame[:, None], base, rng.normal(size=(pairs, 512)))
    emb = np.empty((2 * pairs, 512), dtype=np.float32)
    emb[0::2] = base + rng.normal(size=base.shape)
    emb[1::2] = other + rng.normal(size=base.shape)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        verification_10fold(emb, issame)
        times.append(time.perf_counter() - t0)
    scores = rng.normal(size=2_000_000)
    labels = rng.random(2_000_000) < 0.01
    t0 = time.perf_counter()
    tar_at_far(scores, labels)
    roc_curve(scores, labels)
    score_s = time.perf_counter() - t0
    best = min(times)
    rows = [
        ["10-fold protocol, 6,000 pairs (512-d)", f"{best * 1000:.0f} ms", "< 500 ms"],
        ["ROC + TAR@FAR, 2M scored pairs", f"{2e6 / score_s:,.0f} pairs/s", ""],
    ]
    table = markdown_table(["task", "time / throughput (1 core)", "goal"], rows)
    write_result(
        "eval",
        "Evaluation speed",
        table,
        "python benchmarks/bench_eval.py",
        {"tenfold_s": times, "roc_pairs_per_s": 2e6 / score_s},
        "Best of 5 runs; includes normalisation, distances, 400 accuracy thresholds and 4,000 VAL "
        "thresholds per fold (vectorised with searchsorted).",
    )
    print(table)


if __name__ == "__main__":
    main()
