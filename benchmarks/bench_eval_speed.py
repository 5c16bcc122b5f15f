"""``lafs eval``'s embedding speed on the CPU, before and after, side by side.

The converted MS1M MobileFaceNet (``lafs convert ../shared/models/mobilefacenet-ms1m/
mobilefacenet.pt EXPORT --onnx``) and a ViT-S export (random weights: speed only) embed the first
``--images`` faces of ``lfw.bin`` with the flip test, as ``lafs eval`` does (batch 128), in
interleaved rounds:

- **before**: the previous commit's path reproduced: PyTorch, one forward per batch of 128
  (``lafs eval``'s batch) under ``torch.no_grad``;
- **torch**: today's PyTorch path, ``lafs eval --backend torch`` (``embed_images`` of
  ``load_embedding_model(..., "torch")``, batch 128): glibc keeps freed activation memory for the
  next batch instead of mapping fresh pages and page-faulting them in
  (:func:`~lafslib.evaluation.embed.reuse_freed_memory`);
- **auto (onnxruntime)**: today's default, ``lafs eval --backend auto``: the export's
  ``model.onnx`` in ONNX Runtime.

Reported: images/s (wall: the machine is shared, so contention only lowers it), the process's
user and system CPU time per image and minor page faults per image (both insensitive to other
processes), each the best of the rounds. ``--accuracy`` also evaluates the whole ``lfw.bin``
(12,000 images, flip test) once with the default path through ``evaluate_export``.

Usage: python benchmarks/bench_eval_speed.py [--images 512] [--rounds 3] [--threads 2]
    [--models mobilefacenet vit_small] [--accuracy]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, markdown_table, write_result  # noqa: E402

from lafslib.evaluation.embed import embed_images  # noqa: E402
from lafslib.evaluation.runtime import load_embedding_model  # noqa: E402

MFN = ROOT.parent / "shared" / "models" / "mobilefacenet-ms1m" / "mobilefacenet.pt"
LFW = SHARED_DATA / "lfw" / "lfw.bin"
BATCH = 128  # lafs eval's default


@torch.no_grad()
def embed_before(model: torch.nn.Module, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """The previous commit's ``embed_images`` (no keypoint model here): one forward of the
    whole batch and one of its flip."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.array(images[start : start + batch_size]))
        x = chunk.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        out.append((model(x) + model(x.flip(-1))).float().numpy())
    return np.concatenate(out)


def _measure(
    fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray
) -> tuple[dict[str, float], np.ndarray]:
    t0, w0 = os.times(), time.perf_counter()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    emb = fn(images)
    t1, w1 = os.times(), time.perf_counter()
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return {
        "wall_s": w1 - w0,
        "user_s": t1.user - t0.user,
        "sys_s": t1.system - t0.system,
        "faults": f1 - f0,
    }, emb


def _exports(models: list[str], folder: Path) -> dict[str, Path]:
    from lafslib.engine.export import add_onnx
    from lafslib.models import create_model, save_export
    from lafslib.models.convert import convert_to_export

    out = {}
    for name in models:
        t0 = time.perf_counter()
        if name == "mobilefacenet":
            path, _ = convert_to_export(MFN, folder / name)
        else:
            torch.manual_seed(0)
            path = save_export(create_model(name).eval(), folder / name)
        add_onnx(path)
        print(f"{name}: export + ONNX in {time.perf_counter() - t0:.0f} s", flush=True)
        out[name] = path
    return out


def time_export(
    name: str, export: Path, images: np.ndarray, rounds: int
) -> tuple[list[list[Any]], dict[str, Any]]:
    """Interleaved rounds of the three paths on one export."""
    from lafslib.models import load_export

    plain = load_export(export).eval()
    eager = load_embedding_model(export, "torch")
    auto = load_embedding_model(export, "auto")
    assert auto.backend == "onnxruntime"
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "before (torch, batch 128)": lambda x: embed_before(plain, x),
        "torch": lambda x: embed_images(eager, x, BATCH),
        "auto (onnxruntime)": lambda x: embed_images(auto, x, BATCH),
    }
    for fn in paths.values():  # warm-up: ONNX Runtime's arena, oneDNN kernels
        fn(images[:BATCH])
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in paths}
    embeddings: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for key, fn in paths.items():
            stats, embeddings[key] = _measure(fn, images)
            runs[key].append(stats)
            print(name, key, {k: round(v, 2) for k, v in stats.items()}, flush=True)
    ref = embeddings["before (torch, batch 128)"]
    n = 2 * len(images)  # forward passes (flip test)
    best = {k: {m: min(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    before = best["before (torch, batch 128)"]
    base, base_cpu = n / before["wall_s"], before["user_s"] + before["sys_s"]
    rows = []
    for key, b in best.items():
        diff = float(np.abs(embeddings[key] - ref).max() / np.abs(ref).max())
        cpu = b["user_s"] + b["sys_s"]
        rows.append(
            [
                name,
                key,
                f"{n / b['wall_s']:.0f}",
                f"{n / b['wall_s'] / base:.2f}",
                f"{1e3 * b['user_s'] / n:.1f}",
                f"{1e3 * b['sys_s'] / n:.1f}",
                f"{base_cpu / cpu:.2f}",
                f"{b['faults'] / n:,.0f}",
                f"{diff:.1e}",
            ]
        )
    return rows, {"runs": runs, "best": best}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["mobilefacenet", "vit_small"])
    parser.add_argument("--accuracy", action="store_true")
    args = parser.parse_args()
    from lafslib.data.verification import load_bin

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    images, issame = load_bin(LFW)
    subset = np.ascontiguousarray(images[: args.images])
    rows, data = [], {"images": args.images, "rounds": args.rounds, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        exports = _exports(args.models, Path(tmp))
        for name, path in exports.items():
            r, data[name] = time_export(name, path, subset, args.rounds)
            rows += r
        if args.accuracy and "mobilefacenet" in exports:
            from lafslib.evaluation.report import evaluate_export

            t1 = time.perf_counter()
            report = evaluate_export(
                exports["mobilefacenet"], [LFW], Path(tmp) / "report", progress=False
            )
            r = report["results"]["lfw"]
            data["accuracy"] = {
                "backend": "auto (onnxruntime)",
                "accuracy": r["accuracy"],
                "accuracy_std": r["accuracy_std"],
                "seconds": time.perf_counter() - t1,
                "images_per_s": len(images) * 2 / r["seconds"],
            }
            print("accuracy", data["accuracy"], flush=True)
    header = [
        "export",
        "path",
        "img/s (wall)",
        "x before",
        "user ms/img",
        "sys ms/img",
        "x before (CPU time)",
        "page faults/img",
        "max rel. diff",
    ]
    table = markdown_table(header, rows)
    acc = data.get("accuracy")
    if acc:
        table += (
            f"\n\nWhole `lfw.bin` (12,000 images + flips) with the default path (`lafs eval`, "
            f"ONNX Runtime): accuracy {100 * acc['accuracy']:.2f} +- "
            f"{100 * acc['accuracy_std']:.2f}, {acc['seconds']:.0f} s including loading, "
            f"{acc['images_per_s']:.0f} forward images/s."
        )
    notes = (
        f"The first {args.images} faces of `lfw.bin`, each with its flip (img/s counts both "
        f"forward passes), batch {BATCH}, {args.threads} threads (torch.set_num_threads; ONNX "
        f"Runtime intra-op threads follow it), best of {args.rounds} interleaved rounds after a "
        "warm-up. MobileFaceNet: the real MS1M weights converted with `--onnx`; vit_small: random "
        "weights (speed only). x before: images/s over those of the previous commit's path "
        "(PyTorch, one forward per batch of 128); x before (CPU time): its user + system CPU time "
        "over this path's (unaffected by other processes). max rel. diff: largest absolute "
        "difference of the embeddings over the largest embedding of the before path. Wall-time "
        "ratios mix rounds run under different loads when the machine is shared; the CPU-time "
        "ratios do not."
    )
    command = " ".join(["python benchmarks/bench_eval_speed.py", *sys.argv[1:]])
    data["wall_s"] = time.perf_counter() - t0
    write_result("eval_speed", "lafs eval embedding speed (CPU): before / after", table,
                 command, data, notes)  # fmt: skip
    print(table)


if __name__ == "__main__":
    main()
