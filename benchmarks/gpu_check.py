"""GPU check of LAFS pretraining, prepared for a session with a device (about 8 minutes).

Usage:
    python benchmarks/gpu_check.py                          # cuda, bf16, ViT-S and ViT-B
    python benchmarks/gpu_check.py --device cpu --smoke     # a fast dry run of every part

Writes ``benchmarks/results/gpu_check.json`` (section "gpu_check"):

1. ViT-S and ViT-B LAFS pretraining steps (2 global 14x14 + 8 local 6x6 views, DINO head out
   65536, teacher forward, backward, clipping, fused AdamW, EMA): img/s of the compute alone
   (the views rendered once) and of the whole step with its views on the device (DataLoader
   workers decode the faces and draw their views' randomness, the step renders the views on
   the device, as ``lafs pretrain`` runs), their ratio, model
   FLOP utilisation (FLOPs counted with ``torch.utils.flop_counter`` over the measured peak of
   a large matmul in the same precision) and peak device memory.
2. An SSL-only LFW curve: ``lafs pretrain`` of ``recipes/pretrain/cpu_small.yaml`` on the
   device for ``--minutes`` of wall time, its teacher scored on LFW every ``--eval-every``
   steps (rows of the run's ``metrics.jsonl``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, markdown_table, publish_result  # noqa: E402
from _device import matmul_peak, sync  # noqa: E402

from lafslib.data import SyntheticFaces  # noqa: E402
from lafslib.engine.ema import update_ema  # noqa: E402
from lafslib.engine.optim import adamw  # noqa: E402
from lafslib.engine.pretrain import SSLNetwork, clip_gradients, param_groups  # noqa: E402
from lafslib.engine.seeded import SeededViews  # noqa: E402
from lafslib.engine.state import autocast_context  # noqa: E402
from lafslib.losses import DINOLoss  # noqa: E402
from lafslib.models import DINOHead, create_model  # noqa: E402
from lafslib.transforms import LAFSViews  # noqa: E402

MODELS = {"ViT-S": ("vit_small", {}), "ViT-B": ("vit_base", {})}
SMOKE_MODELS = {"ViT-test": ("vit_test", {})}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _loader(views: LAFSViews, batch: int, workers: int, device: torch.device) -> DataLoader:
    """Synthetic faces as uint8 with their views' random draws, made by DataLoader workers
    (as ``lafs pretrain`` loads them)."""
    faces = SyntheticFaces(num_identities=64, images_per_identity=8, transform=views.draw)
    return DataLoader(SeededViews(faces, 0), batch_size=batch, shuffle=True, drop_last=True,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)  # fmt: skip


def _render(views: LAFSViews, plan: dict, device: torch.device) -> list[dict]:
    """The batch's views rendered on ``device`` (as the training step does)."""
    return views.render(
        {k: v if k == "colour" else v.to(device, non_blocking=True) for k, v in plan.items()}
    )


def throughput(model: tuple[str, dict], args: argparse.Namespace, device: torch.device) -> dict:
    """Compute-only and with-views img/s, FLOPs, utilisation and peak memory of one model."""
    name, kwargs = model
    backbone = create_model(name, **kwargs)
    out_dim = 4096 if args.smoke else 65536
    student = SSLNetwork(backbone, DINOHead(backbone.ssl_dim, out_dim)).to(device)
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss_fn = DINOLoss(out_dim).to(device)
    opt = adamw(param_groups(student), lr=1e-4)

    def step(views: list[dict]) -> None:
        with autocast_context(device, args.precision):
            with torch.no_grad():
                t_out = teacher([v for v in views if v["is_global"]])
            loss = loss_fn(student(views), t_out, 0.04)
        loss.backward()
        clip_gradients(student, 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(teacher, student, 0.996)

    views = LAFSViews()
    loader = _loader(views, args.batch, args.workers, device)
    batches = iter(loader)
    fixed = _render(views, next(batches), device)
    with FlopCounterMode(display=False) as counter:
        step(fixed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step(fixed)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(fixed)
    sync(device)
    compute_s = (time.perf_counter() - t0) / args.steps
    t0 = time.perf_counter()
    for _ in range(args.steps):
        try:
            plan = next(batches)
        except StopIteration:
            batches = iter(loader)
            plan = next(batches)
        step(_render(views, plan, device))
    sync(device)
    with_views_s = (time.perf_counter() - t0) / args.steps
    flops = counter.get_total_flops()
    return {
        "flops_per_step": flops,
        "img_per_s_compute": args.batch / compute_s,
        "img_per_s_with_views": args.batch / with_views_s,
        "with_views_over_compute": compute_s / with_views_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }


def lfw_curve(args: argparse.Namespace, run: Path) -> list[dict]:
    """Eval rows of a ``--minutes`` wall-time pretraining run (stopped at the time limit)."""
    lfw = Path(args.lfw)
    if not lfw.is_file():
        print(f"no LFW .bin at {lfw}: no curve", flush=True)
        return []
    sets = {
        "run.output_dir": str(run),
        "run.device": args.device,
        "run.precision": args.precision,
        "run.max_cpu_minutes": "null",
        "run.schedule_by_budget": "false",
        "run.tensorboard": "false",
        "run.checkpoint_every": 100000,
        "eval.bins": f"[{lfw}]",
        "eval.every": args.eval_every,
        "data.num_workers": args.workers,
    }
    if args.smoke:
        sets.update({"data.train": "synthetic", "data.landmarks": "null", "data.batch_size": 8,
                     "run.max_steps": 4, "run.log_every": 2})  # fmt: skip
    else:
        sets.update({"data.train": str(args.data / "images"), "optim.epochs": 1000,
                     "data.landmarks": str(args.data / "landmarks5.csv")})  # fmt: skip
    cmd = [sys.executable, "-m", "lafslib.cli", "pretrain", "recipes/pretrain/cpu_small.yaml"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    with contextlib.suppress(subprocess.TimeoutExpired):  # the time limit ends the curve
        subprocess.run(cmd, cwd=ROOT, timeout=60 * args.minutes, check=True, capture_output=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    start = rows[0]["time"] if rows else 0.0
    key = f"eval/{lfw.stem}/accuracy"
    return [
        {"step": r["step"], "seconds": r["time"] - start, "lfw_accuracy": r[key]}
        for r in rows
        if key in r
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16", choices=list(DTYPES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--minutes", type=float, default=5.0, help="LFW curve wall time")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "celeba-112")
    parser.add_argument("--lfw", default=str(SHARED_DATA / "lfw" / "lfw.bin"))
    parser.add_argument("--smoke", action="store_true", help="tiny model, sizes and curve")
    parser.add_argument(
        "--out", type=Path, default=None, help="write the JSON here only (not the results)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.steps, args.workers, args.minutes = 4, 1, 0, 2.0
        args.eval_every = 2
        args.lfw = (
            args.lfw
            if Path(args.lfw).is_file()
            else str(SHARED_DATA / "faces-mini" / "lfw_mini.bin")
        )
    device = torch.device(args.device)
    torch.manual_seed(0)
    peak = matmul_peak(device, DTYPES[args.precision], 512 if args.smoke else 8192)
    data: dict = {"peak_flops": peak, "batch": args.batch, "precision": args.precision}
    rows = []
    for label, model in (SMOKE_MODELS if args.smoke else MODELS).items():
        r = throughput(model, args, device)
        r["mfu"] = r["flops_per_step"] * r["img_per_s_compute"] / args.batch / peak
        data[label] = r
        memory = "-" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"
        rows.append([label, f"{r['img_per_s_compute']:,.1f}", f"{r['img_per_s_with_views']:,.1f}",
                     f"{100 * r['with_views_over_compute']:.0f}%", f"{100 * r['mfu']:.0f}%", memory])  # fmt: skip
        print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data["lfw_curve"] = lfw_curve(args, Path(tmp) / "curve")
    curve = ", ".join(
        f"{c['seconds']:.0f} s: {100 * c['lfw_accuracy']:.1f}" for c in data["lfw_curve"]
    )
    table = markdown_table(
        ["model", "img/s (compute)", "img/s (with views)", "with views / compute", "MFU",
         "peak memory GiB"],
        rows,
    ) + f"\n\nSSL-only LFW accuracy over {args.minutes:g} minutes of pretraining: {curve or '-'}"  # fmt: skip
    notes = (
        f"Batch {args.batch}, {args.precision}, {args.workers} DataLoader workers load faces and "
        "draws, views rendered on the device; "
        f"peak = best {args.precision} matmul: {peak / 1e12:,.1f} TFLOP/s."
        + (
            " Smoke run (tiny model and sizes): checks the script, not the device."
            if args.smoke
            else ""
        )
    )
    title = f"GPU check of LAFS pretraining ({device.type})"
    if args.out is not None:
        args.out.write_text(json.dumps({"title": title, "table_md": table, "data": data}) + "\n")
    else:
        publish_result("gpu_check", title, table, data, notes)


if __name__ == "__main__":
    main()
