"""Where a CPU pretraining step spends its time, and img/s of ``lafs pretrain`` before and
after a change, side by side.

Usage: python benchmarks/bench_pretrain_step.py [--steps 6] [--e2e-steps 30] [--before ROOT]

Three recipes on 2 CPU threads: ``recipes/pretrain/cpu_small.yaml`` (batch 128, 2 global LAFS
views of 7x7 landmark tokens), the same with 4 local LAFS views (3x3 tokens, CLS feature), and
DINO multi-crop (2 global 112 px crops and 4 local 48 px crops, CLS feature).

1. Phases of one step in this process (this checkout), as ``lafs pretrain`` runs it: loader
   (decode, landmarks and the views' random draws per face, collation), views (rendered for
   the batch in the step), teacher forward, student forward + loss, backward, clipping +
   AdamW + EMA; the share of the views in the step.
2. Loader CPU time per image: process time of ``dataset[i]`` over 256 faces.
3. ``lafs pretrain`` end to end for ``--e2e-steps`` steps (monitoring, TensorBoard and
   checkpoints off): img/s from ``metrics.jsonl``, for this checkout and, with ``--before``,
   for another checkout of lafslib (``PYTHONPATH=ROOT``), run back to back per recipe.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, markdown_table, publish_result  # noqa: E402

from lafslib.config import load_recipe  # noqa: E402
from lafslib.data import open_dataset  # noqa: E402
from lafslib.engine.ema import update_ema  # noqa: E402
from lafslib.engine.pretrain import SSLNetwork, build_views, clip_gradients, param_groups  # noqa: E402
from lafslib.losses import DINOLoss, koleo_loss  # noqa: E402
from lafslib.models import DINOHead, create_model  # noqa: E402

RECIPE = ROOT / "recipes" / "pretrain" / "cpu_small.yaml"
PHASES = ["loader", "views", "teacher forward", "student forward + loss", "backward", "optimizer"]
RECIPES = {  # label -> recipe overrides
    "cpu_small": {},
    "cpu_small + 4 local LAFS views": {"views.local_views": 4, "model.kwargs.ssl_pool": "cls"},
    "DINO multi-crop, 2 global + 4 local crops": {
        "views.kind": "multicrop",
        "views.local_views": 4,
        "model.kwargs.ssl_pool": "cls",
    },
}


def _dataset(overrides: dict):
    """Recipe, LAFS views and the dataset that yields each face with its views' draws."""
    cfg = load_recipe(RECIPE, [f"{k}={v}" for k, v in overrides.items()])
    views = build_views(cfg.views)
    data = open_dataset(
        cfg.data.train, labelled=False, landmarks=cfg.data.landmarks, transform=views.draw
    )
    return cfg, views, data


def phase_times(overrides: dict, steps: int) -> dict[str, float]:
    """Mean seconds per step of each phase (after one warm-up step), fp32."""
    cfg, views, data = _dataset(overrides)
    torch.manual_seed(0)
    backbone = create_model(cfg.model.name, **cfg.model.kwargs)
    h = cfg.head
    student = SSLNetwork(
        backbone, DINOHead(backbone.ssl_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim)
    )
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss_fn = DINOLoss(h.out_dim)
    opt = torch.optim.AdamW(param_groups(student), lr=1e-4)
    totals = dict.fromkeys(PHASES, 0.0)
    b = cfg.data.batch_size
    for step in range(steps + 1):
        marks = [time.perf_counter()]
        plan = default_collate([data[(step * b + i) % len(data)] for i in range(b)])
        marks.append(time.perf_counter())
        batch = views.render(plan)
        marks.append(time.perf_counter())
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


def loader_cpu_ms(overrides: dict, images: int = 256) -> float:
    """CPU milliseconds per image of ``dataset[i]`` (decode + views) in this process."""
    _, _, data = _dataset(overrides)
    c0 = time.process_time()
    for i in range(images):
        data[i]
    return 1000 * (time.process_time() - c0) / images


def end_to_end(code: Path, overrides: dict, steps: int, run: Path) -> float:
    """img/s of ``lafs pretrain`` (a fresh process, lafslib from ``code``)."""
    sets = {
        **overrides,
        "run.output_dir": str(run),
        "run.max_steps": steps,
        "run.max_cpu_minutes": "null",
        "run.schedule_by_budget": "false",
        "run.log_every": steps // 3,
        "run.checkpoint_every": 10 * steps,
        "run.tensorboard": "false",
    }
    cmd = [sys.executable, "-m", "lafslib.cli", "pretrain", str(RECIPE)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "2"}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/img_per_s" in r][-1]["train/img_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6, help="steps per phase measurement")
    parser.add_argument("--e2e-steps", type=int, default=30, help="steps per lafs pretrain run")
    parser.add_argument("--before", default=None, help="another lafslib checkout to compare")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data: dict[str, object] = {"threads": 2, "before": args.before}
    phase_rows, e2e_rows = [], []
    for label, overrides in RECIPES.items():
        t = phase_times(overrides, args.steps)
        total = sum(t.values())
        cpu_ms = loader_cpu_ms(overrides)
        data[f"phases {label}"] = t
        data[f"loader cpu ms per image {label}"] = cpu_ms
        phase_rows.append(
            [label] + [f"{1000 * t[p]:.0f} ({100 * t[p] / total:.0f}%)" for p in PHASES]
            + [f"{1000 * total:.0f}", f"{cpu_ms:.1f}"]
        )  # fmt: skip
        print(phase_rows[-1], flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            codes = ([("before", Path(args.before))] if args.before else []) + [("after", ROOT)]
            speeds = {
                name: end_to_end(code, overrides, args.e2e_steps, Path(tmp) / name)
                for name, code in codes
            }
        data[f"e2e img/s {label}"] = speeds
        ratio = f"{speeds['after'] / speeds['before']:.2f}x" if args.before else "-"
        e2e_rows.append(
            [label, f"{speeds.get('before', float('nan')):.1f}", f"{speeds['after']:.1f}", ratio]
        )
        print(e2e_rows[-1], flush=True)
    table = (
        "Phases of one fp32 step in one process (ms per step of 128 images, share of the step), "
        "and the loader's CPU time per image (decode, landmarks, draws):\n\n"
        + markdown_table(["recipe", *PHASES, "total ms", "loader CPU ms/img"], phase_rows)
        + f"\n\n`lafs pretrain` end to end ({args.e2e_steps} steps, 2 threads), img/s:\n\n"
        + markdown_table(["recipe", "before", "after", "after / before"], e2e_rows)
    )
    notes = (
        "'before' is the lafslib checkout given by --before, run back to back with this one on "
        "the same machine; the machine may be shared, so compare the ratio, not the absolute "
        "numbers, with other sections."
    )
    publish_result(
        "pretrain_step", "Pretraining step on CPU: profile, before / after", table, data, notes
    )


if __name__ == "__main__":
    main()
