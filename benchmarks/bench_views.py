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


def rate(fn, samples) -> tuple[float, float]:
    """Images per second of this process's CPU time (one thread: per core) and of wall time.

    CPU time is the per-core figure even when other processes share the machine; wall time
    equals it on an idle core.
    """
    for s in samples[:10]:
        fn(s)
    t0, c0 = time.perf_counter(), time.process_time()
    for s in samples:
        fn(s)
    return len(samples) / (time.process_time() - c0), len(samples) / (time.perf_counter() - t0)


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
        runs = [rate(fn, samples) for _ in range(3)]
        best, wall = max(r[0] for r in runs), max(r[1] for r in runs)
        data[name] = best
        data[f"{name} (wall)"] = wall
        rows.append([name, f"{best:,.0f}", f"{wall:,.0f}", "yes" if best >= 200 else "no"])
    table = markdown_table(
        ["views per image", "images/s (1 core, CPU time)", "images/s (wall)", ">= 200 goal"], rows
    )
    notes = (
        f"{args.images} CelebA faces, decoded beforehand; best of 3 runs; one torch thread; "
        "images per second of the process's CPU time (per core; wall time is lower when other "
        "processes share the machine); includes crops, flips, "
        "colour jitter / grayscale / blur / solarisation, landmark perturbation and subsets, "
        "patch sampling and mosaics (LAFS) or resized crops (multi-crop)."
    )
    write_result("views", "View generation", table, "python benchmarks/bench_views.py", data, notes)
    print(table)


if __name__ == "__main__":
    main()
