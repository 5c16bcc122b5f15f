"""Does LAFS pretraining help? A CPU-sized study on real faces, from one command.

Usage: python benchmarks/study_cpu_small.py [--out runs/study] [--scale 1.0]

Arms, all with the same narrow 4-block ViT (patch 16, 49 tokens) of the cpu_small recipes
(recipes/pretrain/cpu_small.yaml, cpu_small_dino.yaml, recipes/finetune/cpu_small_arcface.yaml),
on 2 CPU cores, about 30 minutes in all:
  (a) LAFS pretraining on ../shared/data/celeba-112 as unlabelled data (landmark views), then
      ArcFace finetuning on its identity labels;
  (b) the same finetuning from scratch, given the same total CPU time as (a) (pretraining +
      finetuning), i.e. more finetuning steps;
  (c) DINO random multi-crop pretraining, same epochs as (a), then the same finetuning;
and the few-shot setting: finetuning on 1 and 2 images per identity from each start point (the
scratch arm gets the same finetuning steps there). Every model is evaluated on
../shared/data/lfw/lfw.bin (10-fold accuracy +- std, TAR@FAR=1e-3). Finetuning runs also check a
600-pair LFW subset periodically for the accuracy curves.

Writes runs/study/study.json, benchmarks/results/study.json (the BENCHMARKS.md section) and
benchmarks/results/study_curves.png. ``--scale`` multiplies every epoch count (0.05 for a smoke
run of the whole pipeline in a few minutes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, SHARED_DATA, markdown_table, write_result  # noqa: E402

from lafslib.config import load_recipe  # noqa: E402
from lafslib.data.verification import load_bin_raw, write_bin  # noqa: E402

RECIPES = ROOT / "recipes"
LAFS_RECIPE = RECIPES / "pretrain" / "cpu_small.yaml"
DINO_RECIPE = RECIPES / "pretrain" / "cpu_small_dino.yaml"
FINETUNE_RECIPE = RECIPES / "finetune" / "cpu_small_arcface.yaml"
PRETRAIN_EPOCHS = 2
FINETUNE_EPOCHS = 3
FEW_SHOT_STEPS = 60
FINETUNE_BATCH = 64


WALL: dict[str, float] = {}  # wall seconds per kind of command (pretrain, finetune, eval, ...)


def lafs(*args: str) -> float:
    """Run one ``lafs`` command in a fresh process; return its CPU time (user + system) in
    seconds, which other load on the machine barely changes; its wall time adds to WALL."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "lafslib.cli", *args]
    print("$ lafs " + " ".join(args), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise SystemExit(f"study: command failed: lafs {' '.join(args)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    WALL[args[0]] = WALL.get(args[0], 0.0) + time.perf_counter() - t0
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def sets(*items: str) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


def lfw_subset(lfw: Path, out: Path, per_fold: int = 30) -> tuple[Path, int]:
    """600 LFW pairs (30 same + 30 different from each of the 10 folds), for periodic checks;
    also the number of pairs of the whole set."""
    images, issame = load_bin_raw(lfw)
    fold = len(issame) // 10
    keep = []
    for f in range(10):
        idx = np.arange(f * fold, (f + 1) * fold)
        keep += list(idx[issame[idx]][:per_fold]) + list(idx[~issame[idx]][:per_fold])
    keep = np.array(keep)
    pairs = [images[2 * i + j] for i in keep for j in (0, 1)]
    return write_bin(out / "lfw_600.bin", pairs, issame[keep]), len(issame)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def loss_span(run: Path) -> tuple[float, float]:
    """First logged training loss of a run and the mean of its last five."""
    losses = [r["train/loss"] for r in read_metrics(run) if "train/loss" in r]
    return losses[0], float(np.mean(losses[-5:]))


def checks(run: Path) -> dict[int, float]:
    """Periodic LFW-600 accuracies of a finetuning run, by step."""
    key = "eval/lfw_600/accuracy"
    return {r["step"]: r[key] for r in read_metrics(run) if key in r}


def evaluate(export: Path, lfw: Path, out: Path) -> dict[str, Any]:
    lafs("eval", "--model", str(export), "--bin", str(lfw), "--out", str(out))
    (result,) = json.loads((out / "report.json").read_text())["results"].values()
    return result


def plot_curves(runs: dict[str, dict[str, Path]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, run in runs["pretrain"].items():
        rows = [r for r in read_metrics(run) if "train/loss" in r]
        axes[0].plot([r["step"] for r in rows], [r["train/loss"] for r in rows], label=name)
    axes[0].set(title="pretraining: DINO loss", xlabel="step", ylabel="loss")
    for name, run in runs["finetune"].items():
        rows = read_metrics(run)
        train = [r for r in rows if "train/loss" in r]
        axes[1].plot([r["step"] for r in train], [r["train/loss"] for r in train], label=name)
        acc = [r for r in rows if "eval/lfw_600/accuracy" in r]
        axes[2].plot(
            [r["step"] for r in acc],
            [100 * r["eval/lfw_600/accuracy"] for r in acc],
            marker="o",
            label=name,
        )
    axes[1].set(title="finetuning: ArcFace loss", xlabel="step", ylabel="loss")
    axes[2].set(title="LFW (600-pair subset) accuracy", xlabel="step", ylabel="%")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "study")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every epoch count")
    parser.add_argument("--eval-every", type=int, default=50, help="finetune steps per check")
    parser.add_argument("--max-images", type=int, default=None, help="smoke runs: fewer images")
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw" / "lfw.bin")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    celeba = SHARED_DATA / "celeba-112" / "images"
    lfw = args.lfw
    limit = [f"data.max_images={args.max_images or 'null'}"]
    for need in (celeba, lfw):
        if not need.exists():
            raise SystemExit(f"study: {need} not found (put ../shared beside the repository)")
    t_start = time.perf_counter()
    check, num_pairs = lfw_subset(lfw, out)
    num_images = min(sum(1 for p in celeba.rglob("*.jpg")), args.max_images or 10**9)
    pre_epochs = max(1, round(PRETRAIN_EPOCHS * args.scale))
    ft_epochs = max(1, round(FINETUNE_EPOCHS * args.scale))
    few_steps = max(2, round(FEW_SHOT_STEPS * args.scale))
    timings: dict[str, float] = {}

    # pretraining arms
    exports: dict[str, Path | None] = {"scratch": None}
    pre_runs = {}
    for arm, recipe in (("LAFS", LAFS_RECIPE), ("DINO random-crop", DINO_RECIPE)):
        run = out / f"pretrain_{arm.split()[0].lower()}"
        timings[f"pretrain {arm}"] = lafs(
            "pretrain",
            str(recipe),
            *sets(f"run.output_dir={run}", f"optim.epochs={pre_epochs}", *limit),
        )
        lafs("export", str(run))
        exports[arm] = run / "export"
        pre_runs[arm] = run

    # finetuning on all identities
    ft_runs, results = {}, {}
    ft_common = [f"eval.bins=[{check}]", f"eval.every={args.eval_every}", *limit]
    for arm in ("LAFS", "DINO random-crop", "scratch"):
        run = out / f"finetune_{arm.split()[0].lower()}"
        epochs = ft_epochs
        if arm == "scratch":  # same CPU time as pretraining + finetuning of the LAFS arm
            budget = timings["pretrain LAFS"] + timings["finetune LAFS"]
            epochs = max(ft_epochs, round(ft_epochs * budget / timings["finetune LAFS"]))
        init = ["--init", str(exports[arm])] if exports[arm] else []
        timings[f"finetune {arm}"] = lafs(
            "finetune",
            str(FINETUNE_RECIPE),
            *init,
            *sets(f"run.output_dir={run}", f"optim.epochs={epochs}", *ft_common),
        )
        ft_runs[arm] = run
        r = evaluate(run / "export", lfw, out / f"eval_{run.name}")
        pre = timings.get(f"pretrain {arm}", 0.0)
        results[arm] = {
            "setting": "all identities",
            "accuracy": r["accuracy"],
            "accuracy_std": r["accuracy_std"],
            "tar_at_far_1e-3": r.get("tar_at_far", {}).get("0.001", r.get("val")),
            "finetune_steps": read_metrics(run)[-1]["step"],
            "cpu_minutes": (pre + timings[f"finetune {arm}"]) / 60,
        }

    # few-shot finetuning: k images per identity, the same number of steps for every start
    for k in (1, 2):
        images = 298 * k
        epochs = max(1, round(few_steps / max(1, images // FINETUNE_BATCH)))
        for arm in ("LAFS", "DINO random-crop", "scratch"):
            run = out / f"fewshot{k}_{arm.split()[0].lower()}"
            init = ["--init", str(exports[arm])] if exports[arm] else []
            t = lafs(
                "finetune",
                str(FINETUNE_RECIPE),
                *init,
                *sets(
                    f"run.output_dir={run}",
                    f"optim.epochs={epochs}",
                    f"data.images_per_identity={k}",
                    "eval.bins=[]",
                ),
            )
            r = evaluate(run / "export", lfw, out / f"eval_{run.name}")
            results[f"{arm}, {k}-shot"] = {
                "setting": f"{k} image(s) per identity",
                "accuracy": r["accuracy"],
                "accuracy_std": r["accuracy_std"],
                "tar_at_far_1e-3": r.get("tar_at_far", {}).get("0.001", r.get("val")),
                "finetune_steps": read_metrics(run)[-1]["step"],
                "cpu_minutes": (timings.get(f"pretrain {arm}", 0.0) + t) / 60,
            }

    curves = RESULTS / "study_curves.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot_curves({"pretrain": pre_runs, "finetune": ft_runs}, curves)
    total = (time.perf_counter() - t_start) / 60
    rows = []
    for name, r in results.items():
        tar = r["tar_at_far_1e-3"]
        rows.append(
            [
                name.split(",")[0],
                r["setting"],
                f"{100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}",
                "-" if tar is None else f"{100 * tar:.2f}",
                r["finetune_steps"],
                f"{r['cpu_minutes']:.1f}",
            ]
        )
    table = markdown_table(
        [
            "start",
            "finetuning data",
            "LFW accuracy (%)",
            "TAR@FAR=1e-3 (%)",
            "ft steps",
            "CPU minutes",
        ],
        rows,
    )
    cfg = load_recipe(LAFS_RECIPE)
    kw, views = cfg.model.kwargs, cfg.views
    tokens = (views.image_size // kw["patch_size"]) ** 2
    uniform = float(np.log(cfg.head.out_dim))
    spans = {arm: loss_span(run) for arm, run in pre_runs.items()}
    curves_at = {arm: checks(run) for arm, run in ft_runs.items()}
    common = max(set.intersection(*(set(c) for c in curves_at.values())), default=None)
    gain = 100 * (results["LAFS"]["accuracy"] - results["scratch"]["accuracy"])
    gain_dino = 100 * (results["LAFS"]["accuracy"] - results["DINO random-crop"]["accuracy"])
    notes = (
        f"Narrow ViT (dim {kw['dim']}, {kw['depth']} blocks, patch {kw['patch_size']}, {tokens} "
        f"tokens), celeba-112 ({num_images} images, 298 identities); pretraining {pre_epochs} "
        f"epochs (LAFS: {views.global_views} global + {views.local_views} local landmark views; "
        f"DINO: {views.global_views} global + {views.local_views} local random crops); ArcFace "
        f"finetuning {ft_epochs} epochs "
        "(scratch: as many epochs as fit in the CPU time of LAFS's pretraining + finetuning); "
        f"few-shot: {few_steps} steps. {lfw.name}: 10-fold on {num_pairs:,} pairs. CPU minutes "
        "(user + system time of the processes, both cores) include pretraining. "
        f"LAFS - scratch: {gain:+.2f} points, LAFS - DINO random-crop: {gain_dino:+.2f} points "
        f"(all identities). DINO loss (uniform teacher: ln {cfg.head.out_dim} = {uniform:.2f}): "
        + ", ".join(f"{arm} {a:.2f} -> {b:.2f}" for arm, (a, b) in spans.items())
        + ". "
        + (
            f"LFW-600 at finetuning step {common}: "
            + ", ".join(f"{arm} {100 * c[common]:.1f}%" for arm, c in curves_at.items())
            + ". "
            if common
            else ""
        )
        + f"Whole study: {total:.1f} min wall time ("
        + ", ".join(f"{kind} {sec / 60:.1f}" for kind, sec in WALL.items())
        + "). Curves: benchmarks/results/study_curves.png; diagnosis: README, 'Study'."
    )
    data = {
        "results": results,
        "cpu_seconds": timings,
        "wall_seconds": WALL,
        "total_wall_minutes": total,
    }
    (out / "study.json").write_text(json.dumps(data, indent=2) + "\n")
    write_result(
        "study",
        "Study: does LAFS pretraining help? (celeba-112 -> LFW, 2 CPU cores)",
        table,
        "python benchmarks/study_cpu_small.py",
        data,
        notes,
    )
    print(table)
    print(notes)


if __name__ == "__main__":
    main()
