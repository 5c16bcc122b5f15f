"""Model costs: ViT vs ViT + KP-RPE forward+backward time (side by side), params and FLOPs.

Timing: CVLFace's ViT-S geometry (embed 512, 8 heads, MLP 2560, 14x14 tokens) and lafslib's
ViT-S (384, 6 heads, CLS token), training mode, one forward+backward of a summed embedding, at
each batch size, interleaved (plain, KP-RPE, CVLFace-style KP-RPE) so the ratios share the
machine's state. ``--depth`` shortens the stacks to fit a CPU budget: the KP-RPE cost is per
block, so the ratio barely depends on depth (patch embedding and head are small).

The "CVLFace-style" row emulates CVLFace's pure-PyTorch path in lafslib: manual attention
(``q @ k^T + bias``, softmax) and the bias gathered with one flattened ``(N * N,)`` advanced
index into the context (first batch size only), instead of lafslib's ``torch.gather`` on a
broadcast index.

FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode`, one 112x112 image, forward, built on
the meta device (matmuls, convolutions and attention; gathers and elementwise ops are free).

Usage: python benchmarks/bench_models.py [--depth 2] [--batches 16 32] [--reps 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_result  # noqa: E402

from lafslib.layers.kprpe import KPRPEBias  # noqa: E402
from lafslib.models import create_model, list_models, model_info  # noqa: E402

PAIRS = [("cvlface_vit_small", "cvlface_vit_small_kprpe"), ("vit_small", "vit_small_kprpe")]


def _cvlface_style_bias(self: KPRPEBias, layer: int) -> torch.Tensor:
    """Per-layer bias through a flattened (N * N,) advanced index (CVLFace's CPU path)."""
    ctx = self.context[:, layer if self.context.shape[1] > 1 else 0]
    b, h, t, k = ctx.shape
    flat = (self.index[0, 0] + torch.arange(t, device=ctx.device)[:, None] * k).flatten()
    return ctx.flatten(2)[:, :, flat].view(b, h, t, t)


def _step(model: torch.nn.Module, x: torch.Tensor, kp: torch.Tensor, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model(x, kp).sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def time_pairs(
    depth: int | None, batches: list[int], reps: int, device: str
) -> tuple[list[list[Any]], dict[str, Any]]:
    """Interleaved forward+backward timings of each plain / KP-RPE pair."""
    rows, data = [], {}
    original = KPRPEBias.__getitem__
    for plain_name, kprpe_name in PAIRS:
        kwargs: dict[str, Any] = {"drop_path": 0.0}
        if depth is not None:
            kwargs["depth"] = depth
        torch.manual_seed(0)
        plain = create_model(plain_name, **kwargs).to(device).train()
        kprpe = create_model(kprpe_name, **kwargs).to(device).train()
        torch.nn.init.normal_(kprpe.kprpe.linear.weight, std=0.1)  # a trained-like, non-zero bias
        for batch in batches:
            x = torch.randn(batch, 3, 112, 112, device=device)
            kp = (torch.rand(batch, 5, 2, device=device) * 0.5 + 0.25).contiguous()
            times: dict[str, list[float]] = {"plain": [], "kprpe": []}
            if batch == batches[0]:  # the reference path once per model, to bound the run time
                times["cvlface_style"] = []
            for rep in range(reps + 1):  # the first round warms up
                for variant in times:
                    model = plain if variant == "plain" else kprpe
                    for blk in kprpe.blocks:
                        blk.attn.fused_attn = variant != "cvlface_style"
                    KPRPEBias.__getitem__ = (
                        _cvlface_style_bias if variant == "cvlface_style" else original
                    )
                    try:
                        seconds = _step(model, x, kp, device)
                    finally:
                        KPRPEBias.__getitem__ = original
                    model.zero_grad(set_to_none=True)
                    if rep:
                        times[variant].append(seconds)
            med = {k: min(v) for k, v in times.items()}
            key = f"{kprpe_name}/b{batch}"
            data[key] = {"seconds": times, "best_s": med, "depth": len(plain.blocks)}
            for variant, label in [("kprpe", "lafslib"), ("cvlface_style", "CVLFace-style")]:
                if variant not in med:
                    continue
                rows.append(
                    [
                        f"{plain_name} (depth {len(plain.blocks)})",
                        batch,
                        f"{med['plain']:.2f}",
                        f"KP-RPE, {label}",
                        f"{med[variant]:.2f}",
                        f"{med[variant] / med['plain']:.3f}",
                    ]
                )
            print(*rows[-len(med) + 1 :], sep="\n", flush=True)
    return rows, data


def count_costs() -> tuple[list[list[Any]], dict[str, Any]]:
    """Parameters and forward FLOPs of every registered model at 112x112 (batch 1)."""
    rows, data = [], {}
    for name in list_models():
        try:
            with torch.device("meta"):
                model = create_model(name).eval()
                x = torch.randn(1, 3, 112, 112)
                kp = torch.rand(1, 5, 2)
            params = sum(p.numel() for p in model.parameters())
            needs = model_info(model).needs_keypoints
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model(x, kp) if needs else model(x)
            flops = counter.get_total_flops()
        except Exception as exc:  # a model needing extra arguments: report, don't fail
            data[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        data[name] = {"params": params, "flops": flops, "needs_keypoints": needs}
        rows.append([name, f"{params / 1e6:.2f}", f"{flops / 1e9:.3f}", "yes" if needs else ""])
    return rows, data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=2, help="blocks per timed model (0: full)")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    time_rows, time_data = time_pairs(args.depth or None, args.batches, args.reps, args.device)
    cost_rows, cost_data = count_costs()
    gpu = args.device == "cuda"
    header = ["model", "batch", "plain s", "variant", "KP-RPE s", "ratio"]
    table = "### Forward+backward, ViT vs ViT + KP-RPE\n\n" + markdown_table(header, time_rows)
    table += "\n\n### Parameters and FLOPs (forward, one 112x112 image)\n\n"
    table += markdown_table(["model", "params (M)", "GFLOPs", "keypoints"], cost_rows)
    skipped = [k for k, v in cost_data.items() if "error" in v]
    notes = (
        f"Best of {args.reps} interleaved rounds after one warm-up round (the CPU is shared: "
        f"contention only adds time), "
        f"{'GPU' if gpu else f'{args.threads} CPU threads'}, training mode, drop path 0, "
        f"KP-RPE projection non-zero. `lafslib`: bias = one `torch.gather` per layer on a cached "
        f"(N, N) bucket index, added to the logits (SDPA `attn_mask` at inference and on GPU; "
        f"in CPU training the manual path, which beats SDPA's math fallback for a mask that "
        f"needs a gradient); `CVLFace-style`: manual attention and a flattened (N*N,) "
        f"advanced index, as CVLFace's pure-PyTorch path. "
        f"Goal: KP-RPE overhead <= 10% at batch >= 16. FLOPs count matmuls, convolutions and "
        f"attention only."
    )
    if skipped:
        notes += f" Not counted (need extra arguments): {', '.join(skipped)}."
    command = "python benchmarks/bench_models.py" + (
        f" --device {args.device}" if gpu else f" --depth {args.depth}"
    )
    write_result(
        "models_gpu" if gpu else "models",
        "Models: KP-RPE overhead, parameters and FLOPs" + (" (GPU)" if gpu else ""),
        table,
        command,
        {"timing": time_data, "costs": cost_data, "wall_s": time.perf_counter() - t0},
        notes,
    )
    print(table)
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
