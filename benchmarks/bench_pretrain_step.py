"""Where a cpu_small pretraining step spends its time, and steps/s of ``lafs pretrain`` before
and after the CPU speed-ups (bf16 autocast, a DataLoader worker for the views).

Usage: python benchmarks/bench_pretrain_step.py [--steps 12] [--e2e-steps 40]

1. Phases of one step of ``recipes/pretrain/cpu_small.yaml`` as it was before the study (batch
   32, 2 global + 4 local LAFS views, 49 / 9 tokens) and as it is now (2 global views, flatten
   SSL feature, KoLeo), measured in one process: view generation + collation,
   teacher forward, student forward + DINO loss, backward, clipping + AdamW + EMA; fp32 and
   bf16 autocast side by side.
2. ``lafs pretrain`` end to end for ``--e2e-steps`` steps (monitoring, TensorBoard and
   checkpoints off): steps/s in wall time and images per CPU second, for the recipe before and
   now, each in fp32 and bf16 autocast, with and without a DataLoader worker for the views.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, markdown_table, write_result  # noqa: E402

from lafslib.config import load_recipe  # noqa: E402
from lafslib.data import open_dataset  # noqa: E402
from lafslib.engine.cputime import cpu_seconds  # noqa: E402
from lafslib.engine.ema import update_ema  # noqa: E402
from lafslib.engine.pretrain import SSLNetwork, build_views, clip_gradients, param_groups  # noqa: E402
from lafslib.engine.state import autocast_context  # noqa: E402
from lafslib.losses import DINOLoss, koleo_loss  # noqa: E402
from lafslib.models import DINOHead, create_model  # noqa: E402
from lafslib.transforms import collate_views  # noqa: E402

RECIPE = ROOT / "recipes" / "pretrain" / "cpu_small.yaml"
PHASES = ["views", "teacher forward", "student forward + loss", "backward", "clip + AdamW + EMA"]


# the cpu_small recipe before this study: CLS feature, 2 global + 4 local views, out_dim 4096
BEFORE = {
    "views.local_views": 4,
    "model.kwargs.ssl_pool": "cls",
    "head.out_dim": 4096,
    "loss.koleo_weight": 0,
}
E2E = [  # (label, precision, DataLoader workers, recipe overrides)
    ("before: 2 global + 4 local views", "fp32", 0, BEFORE),
    ("before + bf16", "bf16", 0, BEFORE),
    ("before + 1 worker", "fp32", 1, BEFORE),
    ("now (the recipe): 2 global views, flatten, KoLeo", "fp32", 0, {}),
    ("now + bf16", "bf16", 0, {}),
    ("now + 1 worker", "fp32", 1, {}),
    ("now + bf16 + 1 worker", "bf16", 1, {}),
]


def phase_times(overrides: dict, precision: str, steps: int) -> dict[str, float]:
    """Mean seconds per step of each phase (after one warm-up step)."""
    cfg = load_recipe(RECIPE, [f"{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    views = build_views(cfg.views)
    data = open_dataset(
        cfg.data.train, labelled=False, landmarks=cfg.data.landmarks, transform=views
    )
    backbone = create_model(cfg.model.name, **cfg.model.kwargs)
    h = cfg.head
    head = DINOHead(backbone.ssl_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim)
    student = SSLNetwork(backbone, head)
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss_fn = DINOLoss(h.out_dim)
    opt = torch.optim.AdamW(param_groups(student), lr=1e-4)
    cpu = torch.device("cpu")
    totals = dict.fromkeys(PHASES, 0.0)
    b = cfg.data.batch_size
    for step in range(steps + 1):
        marks = [time.perf_counter()]
        batch = collate_views([data[(step * b + i) % len(data)] for i in range(b)])
        marks.append(time.perf_counter())
        with autocast_context(cpu, precision):
            with torch.no_grad():
                t_out = teacher([v for v in batch if v["is_global"]])
            marks.append(time.perf_counter())
            s_out, feats = student(batch, return_features=True)
            loss = loss_fn(s_out, t_out, 0.04)
            if cfg.loss.koleo_weight:
                loss = loss + cfg.loss.koleo_weight * sum(
                    koleo_loss(f) for f, v in zip(feats, batch) if v["is_global"]
                )
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        clip_gradients(student, 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(teacher, student, 0.996)
        marks.append(time.perf_counter())
        if step:  # the first step warms up allocators and kernels
            for name, t0, t1 in zip(PHASES, marks, marks[1:]):
                totals[name] += (t1 - t0) / steps
    return totals


def end_to_end(
    precision: str, workers: int, overrides: dict, steps: int, run: Path
) -> dict[str, float]:
    """Wall steps/s and images per CPU second of ``lafs pretrain`` (a fresh process)."""
    sets = {
        **overrides,
        "run.output_dir": str(run),
        "run.precision": precision,
        "run.max_steps": steps,
        "run.max_cpu_minutes": "null",
        "run.schedule_by_budget": "false",
        "run.log_every": steps // 2,
        "run.checkpoint_every": 10 * steps,
        "run.tensorboard": "false",
        "data.num_workers": workers,
    }
    cmd = [sys.executable, "-m", "lafslib.cli", "pretrain", str(RECIPE)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    c0 = cpu_seconds()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    cpu = cpu_seconds() - c0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "train/img_per_s" in r][-1]
    images = steps * 32
    return {
        "steps_per_s": last["train/img_per_s"] / 32,
        "img_per_cpu_s": images / cpu,
        "cpu_minutes_logged": last["train/cpu_minutes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="steps per phase measurement")
    parser.add_argument("--e2e-steps", type=int, default=40, help="steps per lafs pretrain run")
    args = parser.parse_args()
    data: dict[str, object] = {"threads": torch.get_num_threads()}
    phase_rows = []
    for recipe, overrides in (("before", BEFORE), ("now", {})):
        for precision in ("fp32", "bf16"):
            t = phase_times(overrides, precision, args.steps)
            data[f"phases {recipe} {precision}"] = t
            total = sum(t.values())
            phase_rows.append(
                [recipe, precision]
                + [f"{1000 * t[p]:.0f} ({100 * t[p] / total:.0f}%)" for p in PHASES]
                + [f"{1000 * total:.0f}"]
            )
            print(phase_rows[-1], flush=True)
    e2e_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        for i, (label, precision, workers, overrides) in enumerate(E2E):
            r = end_to_end(precision, workers, overrides, args.e2e_steps, Path(tmp) / str(i))
            data[f"e2e: {label}"] = r
            base = base or r["steps_per_s"]
            e2e_rows.append(
                [
                    label,
                    precision,
                    workers,
                    f"{r['steps_per_s']:.3f}",
                    f"{r['steps_per_s'] / base:.2f}x",
                    f"{r['img_per_cpu_s']:.1f}",
                ]
            )
            print(e2e_rows[-1], flush=True)
    table = (
        "Phases of one step (ms per step of 32 images, share of the step):\n\n"
        + markdown_table(["recipe", "precision", *PHASES, "total ms"], phase_rows)
        + "\n\n`lafs pretrain recipes/pretrain/cpu_small.yaml` end to end "
        + f"({args.e2e_steps} steps, all 6,019 faces):\n\n"
        + markdown_table(
            ["setting", "precision", "data.num_workers", "steps/s", "vs before", "img per CPU s"],
            e2e_rows,
        )
    )
    notes = (
        "Same process and machine for every row; first row of the second table = the recipe "
        "before (fp32, views generated in the training process). 'img per CPU s' counts the "
        "DataLoader worker's CPU time too, so it shows whether a speed-up in wall time costs CPU."
    )
    write_result(
        "pretrain_step",
        "Pretraining step on CPU: profile and speed-ups (cpu_small)",
        table,
        "python benchmarks/bench_pretrain_step.py",
        data,
        notes,
    )


if __name__ == "__main__":
    main()
