"""View generation throughput per core: the full LAFS view set and DINO multi-crop.

Usage: python benchmarks/bench_views.py [--images 300]
LAFS: 2 global (196 landmarks) + 8 local (36) views, patch 8, 112x112 CelebA faces with their
landmarks5.csv (expanded to the 14x14 landmark grid), one process, one torch thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, markdown_table, write_result  # noqa: E402

from lafslib.data import open_dataset  # noqa: E402
from lafslib.transforms import LAFSViews, MultiCropViews  # noqa: E402


def rate(fn, samples) -> float:
    for s in samples[:10]:
        fn(s)
    t0 = time.perf_counter()
    for s in samples:
        fn(s)
    return len(samples) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = open_dataset(SHARED_DATA / "celeba-112" / "images")
    samples = [ds[i] for i in range(args.images)]
    rows, data = [], {}
    for name, fn in (
        ("LAFS (2 x 196 + 8 x 36 landmarks, p = 8)", LAFSViews()),
        ("DINO multi-crop (2 x 112 + 8 x 48 px)", MultiCropViews()),
    ):
        best = max(rate(fn, samples) for _ in range(3))
        data[name] = best
        rows.append([name, f"{best:,.0f}", "yes" if best >= 200 else "no"])
    table = markdown_table(["views per image", "images/s (1 core)", ">= 200 goal"], rows)
    notes = (
        f"{args.images} CelebA faces, decoded beforehand; best of 3 runs; includes crops, flips, "
        "colour jitter / grayscale / blur / solarisation, landmark perturbation and subsets, "
        "patch sampling and mosaics (LAFS) or resized crops (multi-crop)."
    )
    write_result("views", "View generation", table, "python benchmarks/bench_views.py", data, notes)
    print(table)


if __name__ == "__main__":
    main()
