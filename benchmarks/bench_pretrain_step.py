"""Where a CPU pretraining step spends its time, and img/s of ``lafs pretrain`` before and
after a change, side by side.

Usage: python benchmarks/bench_pretrain_step.py [--steps 6] [--e2e-steps 30]
       [--before ROOT | --before-rev REV] [--update-reps 40] [--metrics-steps 20]

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

With ``--before-rev REV`` (a git revision, checked out in a temporary ``git worktree`` that is
the ``--before`` checkout), also:

4. The update phases of the cpu_small step (clipping + AdamW + teacher EMA), REV's
   implementation (its ``engine/clipping.py``, ``engine/ema.py``, ``engine/param_groups.py``
   loaded from REV) and this checkout's, on the same model and the same gradients, interleaved
   in this process: median ms of each and the ratio.
5. ``lafs pretrain`` cpu_small for ``--metrics-steps`` steps with REV and with this checkout,
   every step logged: the largest difference of each logged value (timings excluded).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, markdown_table, publish_result  # noqa: E402

from lafslib.config import load_recipe  # noqa: E402
from lafslib.data import open_dataset  # noqa: E402
from lafslib.engine.ema import TeacherEMA  # noqa: E402
from lafslib.engine.optim import adamw  # noqa: E402
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
    for name, p in student.named_parameters():  # as PretrainTask: the unused head left out
        if name in student.ssl_unused_parameters():
            p.requires_grad_(False)
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss_fn = DINOLoss(h.out_dim)
    opt = adamw(param_groups(student, set(backbone.no_weight_decay())), lr=1e-4)
    ema = TeacherEMA(teacher, student)
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
        clip_gradients(ema.student, 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(0.996)
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
        "run.output_dir": str(run),
        "run.max_steps": steps,
        "run.max_cpu_minutes": "null",
        "run.schedule_by_budget": "false",
        "run.log_every": steps // 3,
        "run.checkpoint_every": 10 * steps,
        "run.tensorboard": "false",
        **overrides,
    }
    # -P: the working directory (this checkout, where the recipe's data paths start) is not put
    # before PYTHONPATH, so the lafslib imported is the one of ``code``
    cmd = [sys.executable, "-P", "-m", "lafslib.cli", "pretrain", str(RECIPE)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "2"}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    used = subprocess.run(
        [sys.executable, "-P", "-c", "import lafslib; print(lafslib.__file__)"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if not Path(used).resolve().is_relative_to(Path(code).resolve()):
        raise RuntimeError(f"lafs pretrain of {code} imported {used}")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/img_per_s" in r][-1]["train/img_per_s"]


@contextmanager
def checkout(rev: str):
    """A temporary ``git worktree`` of ``rev`` (removed afterwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                           check=False, capture_output=True)  # fmt: skip


def _module(path: Path, name: str) -> ModuleType:
    """Load one source file of another checkout as a module of its own."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def update_phases(before: Path, reps: int) -> dict[str, Any]:
    """Median ms of clipping + AdamW + EMA on the cpu_small step: ``before``'s implementation
    and this checkout's, on the same weights and gradients, interleaved."""
    engine = before / "lafslib" / "engine"
    old_clip = _module(engine / "clipping.py", "before_clipping").clip_gradients
    old_ema = _module(engine / "ema.py", "before_ema").update_ema
    old_groups = _module(engine / "param_groups.py", "before_param_groups").param_groups
    cfg, views, data = _dataset({})
    torch.manual_seed(0)
    backbone = create_model(cfg.model.name, **cfg.model.kwargs)
    h = cfg.head
    student = SSLNetwork(
        backbone, DINOHead(backbone.ssl_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim)
    )
    teacher = copy.deepcopy(student).requires_grad_(False)
    b = cfg.data.batch_size
    batch = views.render(default_collate([data[i] for i in range(b)]))
    with torch.no_grad():
        t_out = teacher([v for v in batch if v["is_global"]])
    DINOLoss(h.out_dim)(student(batch), t_out, 0.04).backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    skip = set(backbone.no_weight_decay())
    # before: the whole student in the optimizer and the EMA, DINO's loop clipping
    s_old, t_old = copy.deepcopy(student), copy.deepcopy(teacher)
    opt_old = adamw(old_groups(s_old, skip), lr=1e-4)
    # after: as PretrainTask builds it (the unused embedding head left out)
    s_new, t_new = copy.deepcopy(student), copy.deepcopy(teacher)
    for name, p in s_new.named_parameters():
        if name in s_new.ssl_unused_parameters():
            p.requires_grad_(False)
    opt_new = adamw(param_groups(s_new, skip), lr=1e-4)
    ema = TeacherEMA(t_new, s_new)

    def set_grads(net: torch.nn.Module) -> None:
        for n, p in net.named_parameters():
            p.grad = grads[n].clone() if n in grads and p.requires_grad else None

    def old_step() -> None:
        old_clip(s_old, 3.0)
        opt_old.step()
        opt_old.zero_grad(set_to_none=True)
        old_ema(t_old, s_old, 0.996)

    def new_step() -> None:
        clip_gradients(ema.student, 3.0)
        opt_new.step()
        opt_new.zero_grad(set_to_none=True)
        ema.update(0.996)

    wall: dict[str, list[float]] = {"before": [], "after": []}
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    for rep in range(reps + 2):
        for name, net, step in (("before", s_old, old_step), ("after", s_new, new_step)):
            set_grads(net)
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            if rep >= 2:  # two warm-up rounds
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    ms = {k: 1000 * statistics.median(v) for k, v in wall.items()}
    cpu_ms = {k: 1000 * statistics.median(v) for k, v in cpu.items()}
    return {
        "ms": ms,
        "ratio": ms["before"] / ms["after"],
        "cpu_ms": cpu_ms,
        "cpu_ratio": cpu_ms["before"] / cpu_ms["after"],
        "reps": reps,
    }


_TIMINGS = ("train/img_per_s", "train/cpu_minutes")


def metrics_difference(before: Path, steps: int, tmp: Path) -> dict[str, float]:
    """Largest |before - after| of each logged value over ``steps`` steps of cpu_small."""
    rows = {}
    for name, code in (("before", before), ("after", ROOT)):
        run = tmp / f"metrics_{name}"
        end_to_end(code, {"run.log_every": 1}, steps, run)
        rows[name] = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows["before"]] == [r["step"] for r in rows["after"]]
    diff: dict[str, float] = {}
    for a, b in zip(rows["before"], rows["after"]):
        for key, value in a.items():
            if key not in _TIMINGS and key != "time" and isinstance(value, (int, float)):
                diff[key] = max(diff.get(key, 0.0), abs(float(value) - float(b[key])))
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6, help="steps per phase measurement")
    parser.add_argument("--e2e-steps", type=int, default=30, help="steps per lafs pretrain run")
    parser.add_argument("--before", default=None, help="another lafslib checkout to compare")
    parser.add_argument(
        "--before-rev", default=None, help="a git revision to compare (a temporary worktree)"
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=list(RECIPES),
        choices=list(RECIPES),
        metavar="LABEL",
        help=f"recipes to profile (default all: {', '.join(map(repr, RECIPES))})",
    )
    parser.add_argument("--update-reps", type=int, default=40, help="update-phase repetitions")
    parser.add_argument("--metrics-steps", type=int, default=20, help="steps of the metrics check")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.before_rev:
        with checkout(args.before_rev) as before:
            args.before = str(before)
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    """Measure and publish (``args.before``: the checkout compared, if any)."""
    data: dict[str, object] = {"threads": 2, "before": args.before_rev or args.before}
    update_md = ""
    if args.before_rev:
        update = update_phases(Path(args.before), args.update_reps)
        data["update phases cpu_small"] = update
        with tempfile.TemporaryDirectory() as tmp:
            diff = metrics_difference(Path(args.before), args.metrics_steps, Path(tmp))
        data[f"metrics max abs difference over {args.metrics_steps} steps"] = diff
        worst = max(diff, key=diff.get)
        update_md = (
            f"\n\nUpdate phases of the cpu_small step (clipping + AdamW + teacher EMA), "
            f"{args.before_rev} and this checkout side by side in one process, median of "
            f"{args.update_reps}:\n\n"
            + markdown_table(
                ["recipe", "time", f"{args.before_rev} ms", "this ms", "speed-up"],
                [["cpu_small", "wall", update["ms"]["before"], update["ms"]["after"],
                  f"{update['ratio']:.2f}x"],
                 ["cpu_small", "CPU (both threads)", update["cpu_ms"]["before"],
                  update["cpu_ms"]["after"], f"{update['cpu_ratio']:.2f}x"]],
            )
            + f"\n\n`metrics.jsonl` of {args.metrics_steps} steps of cpu_small, every value "
            f"logged: largest difference {diff[worst]:.2e} ({worst}); "
            + ", ".join(f"{k.removeprefix('train/')} {v:.1e}" for k, v in sorted(diff.items()))
        )  # fmt: skip
        print(update_md, flush=True)
    phase_rows, e2e_rows = [], []
    for label, overrides in ((k, RECIPES[k]) for k in args.recipes):
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
        + update_md
    )
    notes = (
        "'before' is the lafslib checkout given by --before (or --before-rev), run back to back "
        "with this one on the same machine; the machine may be shared, so compare the ratio, "
        "not the absolute numbers, with other sections. The phase profile runs this checkout's "
        "code: its optimizer column is clipping + AdamW + EMA as the engine runs them. Runs of "
        "this script before 2026-12-07 imported this checkout's lafslib for 'before' too (the "
        "working directory came first on sys.path); 'before' now runs with python -P."
    )
    publish_result(
        "pretrain_step", "Pretraining step on CPU: profile, before / after", table, data, notes
    )


if __name__ == "__main__":
    main()
