"""Does the self-supervised stage learn, and do landmark views beat random crops?

Usage: python benchmarks/study/study_cpu_small.py [--out runs/study] [--budget 30] [--scale 1.0]

On celeba-112 used as unlabelled faces, with the narrow ViT of the cpu_small recipes:
  1. SSL-only: LAFS views (recipes/pretrain/cpu_small.yaml) and DINO random crops
     (cpu_small_dino.yaml) each pretrain for ``--budget`` CPU minutes (``run.max_cpu_minutes``;
     the two runs share the 2 cores, one thread each, so the budget is CPU time, not wall time).
     Every ``--eval-every`` steps the teacher's SSL feature is scored on a 600-pair LFW subset
     (no labels used anywhere), giving accuracy against CPU minutes; random init (seeded as
     pretraining seeds it) and raw pixels are the reference lines. The final teachers are
     exported (``feature: ssl``) and scored with ``lafs eval`` on all of lfw.bin (10-fold, flip).
  2. Finetuning with ArcFace on the identity labels from each start and from scratch: all
     identities (equal steps), 1 and 2 images per identity (equal steps), and scratch given the
     total CPU time of LAFS pretraining + finetuning (``--no-equal-cpu`` skips that arm).

Writes RUN/study.json, benchmarks/results/study.json (the BENCHMARKS.md section, with its
``ssl_only`` block, and an ``ablation`` block copied from the ablations of
benchmarks/study/ssl_ablation_cpu.py and ssl_ablation_short.py when those have run;
``--attach-ablation`` refreshes only that block) and benchmarks/results/study_curves.png.
``--scale`` multiplies the budget and every step count (0.05 for a smoke run of the whole
pipeline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import (  # noqa: E402
    RESULTS,
    ROOT,
    SHARED_DATA,
    accuracy_pct,
    markdown_table,
    publish_result,
    render_benchmarks_md,
)

from lafslib.config import load_recipe  # noqa: E402
from lafslib.data.verification import load_bin_raw, write_bin  # noqa: E402
from lafslib.evaluation.verification import evaluate_bin  # noqa: E402
from lafslib.models import create_model, save_export  # noqa: E402

RECIPES = ROOT / "recipes"
ARMS = {
    "lafs": ("LAFS", RECIPES / "pretrain" / "cpu_small.yaml"),
    "dino_randomcrop": ("DINO random-crop", RECIPES / "pretrain" / "cpu_small_dino.yaml"),
}
FINETUNE_RECIPE = RECIPES / "finetune" / "cpu_small_arcface.yaml"
FINETUNE_EPOCHS = 3  # 282 steps of 64 on 6,019 faces
FEW_SHOT_STEPS = 60
FINETUNE_BATCH = 64
IDENTITIES = 298
WALL: dict[str, float] = {}  # wall seconds per kind of command


def command(*args: str) -> list[str]:
    print("$ lafs " + " ".join(args), flush=True)
    return [sys.executable, "-m", "lafslib.cli", *args]


def run_all(cmds: dict[str, list[str]], kind: str) -> dict[str, float]:
    """Run commands side by side; CPU seconds (user + system, children included) of each."""
    t0 = time.perf_counter()
    procs = {name: subprocess.Popen(cmd, cwd=ROOT) for name, cmd in cmds.items()}
    cpu = {}
    for name, proc in procs.items():
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"study: {' '.join(cmds[name])} failed ({proc.returncode})")
        cpu[name] = usage.ru_utime + usage.ru_stime
    WALL[kind] = WALL.get(kind, 0.0) + time.perf_counter() - t0
    return cpu


def lafs(*args: str) -> float:
    """One ``lafs`` command; its CPU seconds."""
    return run_all({"one": command(*args)}, args[0])["one"]


def sets(**items: Any) -> list[str]:
    out: list[str] = []
    for k, v in items.items():
        out += ["--set", f"{k.replace('__', '.')}={v}"]
    return out


def lfw_subset(lfw: Path, out: Path, per_fold: int = 30) -> Path:
    """600 LFW pairs (30 same + 30 different from each of the 10 folds) for the curves."""
    images, issame = load_bin_raw(lfw)
    fold = len(issame) // 10
    keep = []
    for f in range(10):
        idx = np.arange(f * fold, (f + 1) * fold)
        keep += list(idx[issame[idx]][:per_fold]) + list(idx[~issame[idx]][:per_fold])
    keep = np.array(keep)
    pairs = [images[2 * i + j] for i in keep for j in (0, 1)]
    return write_bin(out / "lfw_600.bin", pairs, issame[keep])


class RawPixels(torch.nn.Module):
    """The 112x112x3 pixels in [-1, 1] as the embedding (the no-learning baseline)."""

    def forward(self, x: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1)


def baselines(out: Path, lfw: Path, check: Path) -> dict[str, dict[str, Any]]:
    """Random init (exported like a pretraining teacher) and raw pixels, on all of LFW (flip)
    and on the 600-pair subset (no flip, as the curves)."""
    cfg = load_recipe(ARMS["lafs"][1])
    torch.manual_seed(cfg.run.seed)  # pretraining seeds its model the same way
    export = save_export(
        create_model(cfg.model.name, **cfg.model.kwargs).eval(), out / "random_init", "ssl"
    )
    r = evaluate(export, lfw, out / "eval_random_init")
    result = {"random_init": {"accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"]}}
    pixels = evaluate_bin(RawPixels(), lfw)
    result["raw_pixels"] = {"accuracy": pixels["accuracy"], "accuracy_std": pixels["accuracy_std"]}
    from lafslib.models import load_export

    for name, model in (("random_init", load_export(export)), ("raw_pixels", RawPixels())):
        result[name]["lfw_600"] = evaluate_bin(model, check, flip=False)["accuracy"]
    return result


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def ssl_curve(run: Path) -> list[tuple[int, float, float]]:
    """(step, CPU minutes, LFW-600 accuracy) of the pretraining monitor."""
    rows = read_metrics(run)
    cpu = {r["step"]: r["train/cpu_minutes"] for r in rows if "train/cpu_minutes" in r}
    key = "eval/lfw_600/accuracy"
    return [(r["step"], cpu.get(r["step"], float("nan")), r[key]) for r in rows if key in r]


def evaluate(export: Path, lfw: Path, out: Path) -> dict[str, Any]:
    lafs("eval", "--model", str(export), "--bin", str(lfw), "--out", str(out))
    (result,) = json.loads((out / "report.json").read_text())["results"].values()
    return result


def finetune_and_score(
    run: Path, init: Path | None, lfw: Path, eval_out: Path, *settings: str
) -> dict[str, Any]:
    """``lafs finetune`` of FINETUNE_RECIPE (from ``init`` or scratch), then ``lafs eval`` of its
    export: the eval result plus ``steps`` and ``cpu_minutes`` of the finetuning."""
    cpu = lafs(
        "finetune",
        str(FINETUNE_RECIPE),
        *(["--init", str(init)] if init else []),
        *sets(run__output_dir=run),
        *settings,
    )
    r = evaluate(run / "export", lfw, eval_out)
    return {**r, "steps": read_metrics(run)[-1]["step"], "cpu_minutes": cpu / 60}


def plot_curves(curves: dict[str, list], lines: dict[str, float], ft_runs: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, pts in curves.items():
        axes[0].plot([p[1] for p in pts], [100 * p[2] for p in pts], marker="o", label=name)
    for name, acc in lines.items():
        style = {"color": "gray" if "init" in name else "k", "linestyle": "--"}
        axes[0].axhline(100 * acc, label=name, **style)
    axes[0].set(
        title="SSL-only: teacher feature on LFW-600 (no labels)",
        xlabel="pretraining CPU minutes",
        ylabel="accuracy %",
    )
    for name, run in ft_runs.items():
        rows = [r for r in read_metrics(run) if "eval/lfw_600/accuracy" in r]
        axes[1].plot(
            [r["step"] for r in rows],
            [100 * r["eval/lfw_600/accuracy"] for r in rows],
            marker="o",
            label=name,
        )
    axes[1].set(title="ArcFace finetuning: LFW-600", xlabel="finetuning step", ylabel="accuracy %")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ablation_block() -> dict[str, Any]:
    """Each ablation of ``benchmarks/study/ssl_ablation_cpu.py`` (equal CPU time, no flip) and of
    ``benchmarks/study/ssl_ablation_short.py`` (complete 4-epoch schedules side by side, flip; names
    prefixed ``short/``) that has run, and its SSL-only LFW accuracy (fractions): best and last
    point with their CPU minutes."""
    block = {}
    for source, prefix, flip in (
        ("ssl_ablation_cpu", "", False),
        ("ssl_ablation_short", "short/", True),
    ):
        path = RESULTS / f"{source}.json"
        if not path.is_file():
            continue
        for name, row in json.loads(path.read_text())["data"].items():
            best = max(row["curve"], key=lambda p: p["accuracy"])
            last = row["curve"][-1]
            block[prefix + name] = {
                "change": row["change"],
                "flip": flip,
                "best": {"accuracy": best["accuracy"], "cpu_minutes": best["cpu_minutes"]},
                "last": {"accuracy": last["accuracy"], "cpu_minutes": last["cpu_minutes"]},
            }
    return block


def attach_ablation() -> None:
    """Refresh the ``ablation`` block of an existing study result without rerunning it."""
    path = RESULTS / "study.json"
    payload = json.loads(path.read_text())
    payload["data"]["ablation"] = ablation_block()
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    render_benchmarks_md()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "study")
    parser.add_argument("--budget", type=float, default=30.0, help="pretraining CPU minutes")
    parser.add_argument("--scale", type=float, default=1.0, help="scales budget and steps")
    parser.add_argument("--eval-every", type=int, default=100, help="pretraining steps")
    parser.add_argument("--no-equal-cpu", action="store_true", help="skip that scratch arm")
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw" / "lfw.bin")
    parser.add_argument(
        "--attach-ablation",
        action="store_true",
        help="only copy the equal-CPU ablation rows into benchmarks/results/study.json",
    )
    args = parser.parse_args()
    if args.attach_ablation:
        attach_ablation()
        return
    out = args.out.resolve()
    if out.exists():
        raise SystemExit(f"study: {out} exists; give another --out (runs are never overwritten)")
    out.mkdir(parents=True)
    celeba = SHARED_DATA / "celeba-112" / "images"
    for need in (celeba, args.lfw):
        if not need.exists():
            raise SystemExit(f"study: {need} not found (put ../shared beside the repository)")
    t_start = time.perf_counter()
    lfw, check = args.lfw, lfw_subset(args.lfw, out)
    budget = args.budget * args.scale
    eval_every = max(2, round(args.eval_every * args.scale))
    ft_epochs = max(1, round(FINETUNE_EPOCHS * args.scale))
    few_steps = max(2, round(FEW_SHOT_STEPS * args.scale))

    # 1. SSL-only: both view kinds side by side, one thread each, the same CPU budget
    ssl = baselines(out, lfw, check)
    runs = {arm: out / f"pretrain_{arm}" for arm in ARMS}
    cpu = run_all(
        {
            arm: command(
                "pretrain",
                str(recipe),
                *sets(
                    run__output_dir=runs[arm],
                    run__threads=1,
                    data__num_workers=1,  # one view worker per run: 4 processes on 2 cores
                    run__max_cpu_minutes=budget,
                    run__log_every=min(10, eval_every),
                    eval__bins=f"[{check}]",
                    eval__every=eval_every,
                    eval__flip="false",
                    eval__batch_size=200,
                ),
            )
            for arm, (_, recipe) in ARMS.items()
        },
        "pretrain",
    )
    curves = {}
    for arm in ARMS:
        lafs("export", str(runs[arm]))
        r = evaluate(runs[arm] / "export", lfw, out / f"eval_ssl_{arm}")
        curve = ssl_curve(runs[arm])
        curves[ARMS[arm][0]] = curve
        ssl[arm] = {
            "accuracy": r["accuracy"],
            "accuracy_std": r["accuracy_std"],
            "steps": read_metrics(runs[arm])[-1]["step"],
            "cpu_minutes": curve[-1][1] if curve else None,
            "process_cpu_minutes": cpu[arm] / 60,
            "lfw_600_curve": [{"step": s, "cpu_minutes": c, "accuracy": a} for s, c, a in curve],
        }

    # 2. finetuning from each start and from scratch
    exports: dict[str, Path | None] = {arm: runs[arm] / "export" for arm in ARMS}
    exports["scratch"] = None
    names = {**{arm: ARMS[arm][0] for arm in ARMS}, "scratch": "scratch"}
    finetune: dict[str, dict[str, Any]] = {}
    ft_runs: dict[str, Path] = {}
    ft_cpu: dict[str, float] = {}

    def finetune_arm(start: str, label: str, epochs: int, **extra: Any) -> None:
        run = out / f"finetune_{label.replace(' ', '_')}_{start}"
        r = finetune_and_score(
            run, exports[start], lfw, out / f"eval_{run.name}", *sets(optim__epochs=epochs, **extra)
        )
        ft_cpu[f"{label} {start}"] = 60 * r["cpu_minutes"]
        pre = ssl[start]["process_cpu_minutes"] if start in ARMS else 0.0
        finetune[f"{names[start]}, {label}"] = {
            "accuracy": r["accuracy"],
            "accuracy_std": r["accuracy_std"],
            "tar_at_far_1e-3": r.get("val"),
            "finetune_steps": r["steps"],
            "cpu_minutes": pre + r["cpu_minutes"],
        }
        if label == "all":
            ft_runs[names[start]] = run

    for start in ("lafs", "dino_randomcrop", "scratch"):
        finetune_arm(start, "all", ft_epochs, eval__bins=f"[{check}]", eval__every=50)
        for k in (1, 2):  # k-shot: the same number of steps (whole epochs) for every start
            epochs = max(1, round(few_steps / max(1, IDENTITIES * k // FINETUNE_BATCH)))
            finetune_arm(start, f"{k}-shot", epochs, data__images_per_identity=k, eval__bins="[]")
    if not args.no_equal_cpu:  # scratch given LAFS's pretraining + finetuning CPU time
        total = ssl["lafs"]["process_cpu_minutes"] + ft_cpu["all lafs"] / 60
        epochs = round(ft_epochs * total / (ft_cpu["all scratch"] / 60))
        finetune_arm("scratch", "equal CPU", epochs, eval__bins=f"[{check}]", eval__every=200)

    curves_png = RESULTS / "study_curves.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = {
        "random init": ssl["random_init"]["lfw_600"],
        "raw pixels": ssl["raw_pixels"]["lfw_600"],
    }
    plot_curves(curves, lines, ft_runs, curves_png)
    wall = (time.perf_counter() - t_start) / 60

    ssl_rows = [
        [
            "LAFS teacher" if arm == "lafs" else "DINO random-crop teacher",
            accuracy_pct(ssl[arm]),
            ssl[arm]["steps"],
            f"{ssl[arm]['cpu_minutes']:.1f}",
        ]
        for arm in ARMS
    ]
    ssl_rows += [
        ["random init", accuracy_pct(ssl["random_init"]), 0, 0],
        ["raw pixels", accuracy_pct(ssl["raw_pixels"]), "-", 0],
    ]
    ft_rows = [
        [
            name,
            accuracy_pct(r),
            "-" if r["tar_at_far_1e-3"] is None else f"{100 * r['tar_at_far_1e-3']:.2f}",
            r["finetune_steps"],
            f"{r['cpu_minutes']:.1f}",
        ]
        for name, r in finetune.items()
    ]
    table = (
        "SSL-only (no labels): the teacher's SSL feature on lfw.bin (10-fold, flip)\n\n"
        + markdown_table(["features", "LFW accuracy (%)", "steps", "CPU minutes"], ssl_rows)
        + "\n\nArcFace finetuning on the 298 identities, LFW (10-fold, flip)\n\n"
        + markdown_table(
            ["start, data", "LFW accuracy (%)", "VAL@FAR=1e-3 (%)", "ft steps", "CPU minutes"],
            ft_rows,
        )
    )
    cfg = load_recipe(ARMS["lafs"][1])
    kw = cfg.model.kwargs
    notes = (
        f"Narrow ViT (dim {kw['dim']}, {kw['depth']} blocks, patch {kw['patch_size']}, "
        f"ssl_pool {kw.get('ssl_pool', 'cls')}), celeba-112 as unlabelled data (6,019 faces); "
        f"pretraining budget {budget:g} CPU minutes per method (both runs side by side, one "
        "thread each; monitoring excluded); CPU minutes of finetuning rows include the "
        f"pretraining. Finetuning {ft_epochs} epochs of batch {FINETUNE_BATCH} (all identities), "
        f"{few_steps} steps (k-shot). Whole study: {wall:.1f} min wall ("
        + ", ".join(f"{kind} {sec / 60:.1f}" for kind, sec in WALL.items())
        + "). Curves: benchmarks/results/study_curves.png; diagnosis and ablations: README, "
        "'Study'."
    )
    data = {
        "ssl_only": ssl,
        "finetune": finetune,
        "budget_cpu_minutes": budget,
        "wall_seconds": WALL,
        "total_wall_minutes": wall,
        "ablation": ablation_block(),
    }
    (out / "study.json").write_text(json.dumps(data, indent=2) + "\n")
    publish_result(
        "study",
        "Study: does the self-supervised stage learn? (celeba-112 -> LFW, 2 CPU cores)",
        table,
        data,
        notes,
    )


if __name__ == "__main__":
    main()
