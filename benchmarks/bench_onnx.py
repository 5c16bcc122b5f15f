"""ONNX Runtime vs PyTorch: CPU inference time of exported backbones, side by side.

Each model is exported with :func:`lafslib.engine.export.export_onnx` (dynamo exporter, dynamic
batch, checked against PyTorch) into a temporary folder, then PyTorch (eval mode,
``torch.inference_mode``) and ONNX Runtime (CPU provider, all graph optimisations) embed the same
random images (and random keypoints for KP-RPE models) in interleaved rounds, both with the same
number of threads. KP-RPE projections are set non-zero and BatchNorm statistics are taken
from random images, as a trained model would have them.

Usage: python benchmarks/bench_onnx.py [--models vit_small vit_small_kprpe] [--batches 1 16]
    [--reps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_result  # noqa: E402

from lafslib.engine.export import export_onnx, onnx_signature  # noqa: E402
from lafslib.layers import KPRPE  # noqa: E402
from lafslib.models import create_model  # noqa: E402

MODELS = ["iresnet50", "vit_small", "vit_small_kprpe", "cvlface_vit_small_kprpe"]


def _inputs(model: torch.nn.Module, batch: int) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(batch)
    out = {}
    for name, shape in onnx_signature(model)["inputs"].items():
        t = torch.rand(batch, *shape[1:], generator=g)
        out[name] = (t * 2 - 1 if name == "images" else t).numpy()
    return out


def _calibrate_batchnorm(model: torch.nn.Module, batch: int = 16) -> None:
    """Set BatchNorm statistics from one batch of random inputs, then eval mode: an untrained
    IResNet-50 with the initial statistics (mean 0, var 1) has embeddings of ~1e20."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: this batch's statistics
    with torch.no_grad():
        model.train()(*(torch.from_numpy(v) for v in _inputs(model, batch).values()))
    model.eval()


def time_model(
    name: str, batches: list[int], reps: int, threads: int, folder: Path
) -> tuple[list[list[Any]], dict[str, Any]]:
    """Export ``name`` and time PyTorch against ONNX Runtime at each batch size."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, KPRPE):
            torch.nn.init.normal_(m.linear.weight, std=0.1)
    _calibrate_batchnorm(model)
    t0 = time.perf_counter()
    path = export_onnx(model, folder / f"{name}.onnx")
    export_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rows, data = [], {"export_s": export_s, "batches": {}}
    for batch in batches:
        feeds = _inputs(model, batch)
        args = [torch.from_numpy(v) for v in feeds.values()]
        times: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
        for rep in range(reps + 1):  # the first round warms up
            t0 = time.perf_counter()
            with torch.inference_mode():
                expected = model(*args).numpy()
            t1 = time.perf_counter()
            got = session.run(None, feeds)[0]
            t2 = time.perf_counter()
            if rep:
                times["pytorch"].append(t1 - t0)
                times["onnxruntime"].append(t2 - t1)
        best = {k: min(v) for k, v in times.items()}
        diff = float(np.abs(got - expected).max())
        data["batches"][batch] = {"seconds": times, "best_s": best, "max_abs_diff": diff}
        rows.append(
            [
                name,
                "yes" if len(feeds) > 1 else "",
                batch,
                f"{1e3 * best['pytorch']:.1f}",
                f"{1e3 * best['onnxruntime']:.1f}",
                f"{best['pytorch'] / best['onnxruntime']:.2f}",
                f"{diff:.1e}",
            ]
        )
        print(rows[-1], flush=True)
    return rows, data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows, data = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r, data[name] = time_model(name, args.batches, args.reps, args.threads, Path(tmp))
            rows += r
    header = [
        "model",
        "keypoints",
        "batch",
        "PyTorch ms",
        "ONNX Runtime ms",
        "speed-up",
        "max diff",
    ]
    table = markdown_table(header, rows)
    notes = (
        f"Inference of one batch of 112x112 images, best of {args.reps} interleaved rounds "
        f"after one warm-up round (the CPU is shared: contention only adds time), "
        f"{args.threads} thread(s) for both (torch.set_num_threads / ORT intra-op threads). "
        f"PyTorch: eval mode under `torch.inference_mode` (SDPA attention); ONNX Runtime "
        f"{ort.__version__}: CPU provider, graph optimisations on, model exported by "
        f"`export_onnx` (`torch.onnx.export(dynamo=True)`). KP-RPE models take the second "
        f"input `keypoints` (random here, projection non-zero). Untrained weights, BatchNorm "
        f"statistics from one batch of random images. speed-up = PyTorch / ONNX "
        f"Runtime; max diff = largest absolute difference of the embeddings."
    )
    command = " ".join(["python benchmarks/bench_onnx.py", *sys.argv[1:]])
    data["wall_s"] = time.perf_counter() - t0
    write_result("onnx", "ONNX Runtime vs PyTorch inference (CPU)", table, command, data, notes)
    print(table)
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
