"""Decode throughput of the data layer: 112x112 JPEG -> float tensor in [-1, 1], one core.

Usage: python benchmarks/bench_data.py [--images 2000]
Reads ../shared/data/celeba-112 from its folder and from a .rec packed into a temp dir.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, markdown_table, write_result  # noqa: E402

from lafslib.data import ImageFolderDataset, RecordIODataset, pack_folder  # noqa: E402


def to_tensor(sample: dict) -> torch.Tensor:
    x = torch.from_numpy(sample["image"]).permute(2, 0, 1).float()
    return x.div_(127.5).sub_(1.0)


def throughput(ds, n: int) -> float:
    for i in range(min(50, n)):  # warm the page cache and allocator
        ds[i]
    t0 = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = SHARED_DATA / "celeba-112" / "images"
    folder = ImageFolderDataset(root, labelled=True, transform=to_tensor)
    rows, data = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        rec_path = Path(tmp) / "celeba.rec"
        t0 = time.perf_counter()
        pack_folder(root, rec_path, progress=False)
        pack_s = time.perf_counter() - t0
        rec = RecordIODataset(rec_path, transform=to_tensor)
        for name, ds in (("folder (JPEG files)", folder), (".rec (RecordIO)", rec)):
            rates = [throughput(ds, args.images) for _ in range(3)]
            best = float(np.max(rates))
            data[name] = {"img_per_s": best, "runs": rates}
            rows.append([name, f"{best:,.0f}", "yes" if best >= 2000 else "no"])
    data["pack_s"] = pack_s
    data["pack_images"] = len(folder)
    table = markdown_table(["source", "decode + to-tensor img/s (1 core)", ">= 2,000 goal"], rows)
    notes = (
        f"112x112 CelebA JPEGs (`../shared/data/celeba-112`, {len(folder)} images), PIL decode, "
        f"uint8 -> float [-1, 1] tensor, one process, one torch thread, best of 3 runs of "
        f"{args.images} images. Packing the {len(folder)} images into .rec took {pack_s:.1f} s."
    )
    write_result(
        "data", "Data decode throughput", table, "python benchmarks/bench_data.py", data, notes
    )
    print(table)


if __name__ == "__main__":
    main()
