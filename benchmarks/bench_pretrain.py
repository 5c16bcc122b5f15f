"""Pretraining throughput and model FLOP utilisation (DINO step over LAFS views).

Usage:
    python benchmarks/bench_pretrain.py                      # CPU, section "pretrain"
    python benchmarks/bench_pretrain.py --device cuda --precision bf16   # section "pretrain_gpu"

A step = student forward on 2 global (14x14 tokens) + 8 local (6x6) LAFS views, teacher forward
on the globals, DINO loss, backward, per-parameter clipping, AdamW and the EMA update. FLOPs
are counted with ``torch.utils.flop_counter`` on one step; utilisation is FLOP/s over the
measured peak of a large matmul in the same precision. "with data" adds the batch's data in
the main process (``num_workers=0``): synthetic faces and their views' random draws on the CPU,
the views rendered on the device.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_result  # noqa: E402
from _device import matmul_peak, sync  # noqa: E402

from lafslib.data import SyntheticFaces  # noqa: E402
from lafslib.engine.ema import update_ema  # noqa: E402
from lafslib.engine.pretrain import SSLNetwork, clip_gradients, param_groups  # noqa: E402
from lafslib.losses import DINOLoss  # noqa: E402
from lafslib.models import DINOHead, create_model  # noqa: E402
from lafslib.transforms import LAFSViews  # noqa: E402

MODELS = {
    "ViT-Ti, 6 blocks (dim 192, 3 heads)": ("vit_tiny", {"depth": 6}),
    "ViT-S (dim 384, depth 12, 6 heads)": ("vit_small", {}),
}


def make_batch(views: LAFSViews, batch: int, device: torch.device) -> list[dict]:
    """Faces and their draws made per face on the CPU, the views rendered on ``device``."""
    data = SyntheticFaces(num_identities=batch, images_per_identity=1, transform=views.draw)
    plan = default_collate([data[i] for i in range(batch)])
    return views.render({k: v if k == "colour" else v.to(device) for k, v in plan.items()})


def bench_model(
    name: str, kwargs: dict, batch: int, device: torch.device, precision: str, steps: int
):
    backbone = create_model(name, **kwargs)
    student = SSLNetwork(backbone, DINOHead(backbone.ssl_dim, 65536)).to(device)
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss_fn = DINOLoss(65536).to(device)
    opt = torch.optim.AdamW(param_groups(student), lr=1e-4)
    views = LAFSViews()
    batch_views = make_batch(views, batch, device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def step(vs: list[dict]) -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            with torch.no_grad():
                t_out = teacher([v for v in vs if v["is_global"]])
            loss = loss_fn(student(vs), t_out, 0.04)
        loss.backward()
        clip_gradients(student, 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(teacher, student, 0.996)

    with FlopCounterMode(display=False) as counter:
        step(batch_views)
    flops = counter.get_total_flops()
    step(batch_views)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(batch_views)
    sync(device)
    compute_s = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(max(steps // 2, 1)):
        step(make_batch(views, batch, device))
    sync(device)
    with_data_s = (time.perf_counter() - t0) / max(steps // 2, 1)
    return flops, compute_s, with_data_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    peak_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.precision
    ]
    peak = matmul_peak(device, peak_dtype, 8192 if device.type == "cuda" else 2048)
    rows, data = [], {"peak_flops": peak, "batch": args.batch, "precision": args.precision}
    for label, (name, kwargs) in MODELS.items():
        flops, compute_s, with_data_s = bench_model(
            name, kwargs, args.batch, device, args.precision, args.steps
        )
        util = flops / compute_s / peak
        rows.append(
            [
                label,
                f"{flops / 1e9:,.0f}",
                f"{args.batch / compute_s:,.1f}",
                f"{100 * util:.0f}%",
                f"{args.batch / with_data_s:,.1f}",
            ]
        )
        data[name] = {
            "flops_per_step": flops,
            "step_s": compute_s,
            "step_with_data_s": with_data_s,
            "utilisation": util,
        }
        print(rows[-1], flush=True)
    header = ["model", "GFLOP / step", "img/s (compute)", "FLOP utilisation", "img/s (with views)"]
    section = "pretrain_gpu" if device.type == "cuda" else "pretrain"
    where = "GPU" if device.type == "cuda" else "CPU"
    cmd = "python benchmarks/bench_pretrain.py" + (
        f" --device {args.device} --precision {args.precision}" if device.type == "cuda" else ""
    )
    notes = (
        f"Batch {args.batch} images x (2 global + 8 local LAFS views), DINO head out_dim 65536, "
        f"{args.precision}. Peak = best {peak_dtype} square matmul: {peak / 1e9:,.0f} GFLOP/s. "
        "'with views' makes the faces and their draws in the training process and renders the "
        "views on the device."
    )
    write_result(
        section, f"Pretraining step ({where})", markdown_table(header, rows), cmd, data, notes
    )


if __name__ == "__main__":
    main()
