"""LAFS in its own regime: many unlabelled faces, few labels, longer budgets (the pool study).

Usage: python benchmarks/study/study_pool.py [--out runs/study_pool] [--jobs 2] [--draws 3]
       [--stop-after pretrain|kshot]
       python benchmarks/study/study_pool.py --snapshot RUN   (score a run in progress)
       python benchmarks/study/study_pool.py --run RUN        (pretrain and score one run)

Unlabelled pool: utkface-112 and celeba-112 (28,477 faces, two ``data.train`` sources with
their landmark sidecars); labelled set: the 298 celeba-112 identities; test: all of lfw.bin.
Three self-supervised arms on the cpu_small backbone (ViT dim 128, 4 blocks, patch 16, flatten
SSL feature), each a ``lafs pretrain`` whose schedules follow its CPU budget
(``run.schedule_by_budget``, ``optim.epochs: 40`` as the other bound, which only ``lafs`` on
celeba-112 alone reaches: 40 epochs of its 6,019 faces take 112.5 of its 120 CPU minutes):

- ``lafs``: LAFS as published, 2 global landmark views and 2 local landmark-subset views (25 of
  the 49 landmark patches, in the global layout with the others blanked: ``local_layout:
  grid``, which the flatten feature needs), landmark perturbation (sigma 5 px);
- ``lafs_global``: recipes/pretrain/cpu_small.yaml as it is (2 global landmark views);
- ``dino_randomcrop``: recipes/pretrain/cpu_small_dino.yaml (2 random resized crops).

Budgets (CPU minutes, one thread per run, ``--jobs`` runs side by side): 30, 120 and 300 for
``lafs``, 30 and 120 for the others, and ``lafs`` on celeba-112 alone at 120 (pool ablation);
ablations at 30 (METHODS: teacher temperature, the CLS feature, a larger ViT).
Every run resumes (``--resume auto``): rerun the same command after an interruption and it
goes on where it stopped; finished runs, scores and finetunings are kept and skipped. Each
teacher is scored without labels (pool_scores.py: raw, whitened on the pool, wide), as are
both networks at init and raw pixels. Then k-shot finetuning (1, 2, 5 images per identity and
all) from the ``lafs`` teacher of the best whitened budget and from scratch, ``--draws``
paired draws (``run.seed`` picks the images, the head and the batch order, the same for both
starts). The protocol was fixed before any draw here, from one_shot_draws.py on the 6k study
(where it was the pretrained start's best and scratch's within 0.1 point of its own best):
embedding head whitened on the training images, imprinted class centres, lr 3e-4, about 60
steps, for k-shot; recipes/finetune/cpu_small_arcface.yaml as it is (3 epochs, lr 1e-3) for
all images. Writes benchmarks/results/study_pool.json and its BENCHMARKS.md section once every
part is done (until then it prints what is done).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import ROOT, SHARED_DATA, markdown_table, write_result  # noqa: E402
from study_cpu_small import FINETUNE_BATCH, IDENTITIES, finetune_and_score  # noqa: E402

RECIPES = ROOT / "recipes" / "pretrain"
TEACHER_TEMP = 0.04  # DINO's; at the recipe's 0.07 the teacher collapses to uniform here
LOCAL_GRID = {"views.local_views": 2, "views.local_layout": "grid", "views.local_landmarks": 25}
SHARP = {"loss.teacher_temp": TEACHER_TEMP, "loss.warmup_teacher_temp": TEACHER_TEMP}
BIG_MODEL = {"dim": 192, "depth": 6, "num_heads": 3, "mlp_dim": 768}  # a step about 2.3x as long
METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "lafs": (
        f"LAFS: 2 global + 2 local landmark views (25 of 49, grid), teacher temp {TEACHER_TEMP}",
        "cpu_small.yaml",
        {**LOCAL_GRID, **SHARP},
    ),
    "lafs_global": (
        "LAFS global views only (cpu_small.yaml, teacher temp 0.07)",
        "cpu_small.yaml",
        {},
    ),
    "dino_randomcrop": (
        "DINO random resized crops (cpu_small_dino.yaml)",
        "cpu_small_dino.yaml",
        {},
    ),
    # ablations (table rows, not in the data block): which change moves it
    "lafs_tt07": ("lafs at teacher temp 0.07 (the recipe's)", "cpu_small.yaml", LOCAL_GRID),
    "lafs_global_sharp": (f"lafs_global at teacher temp {TEACHER_TEMP}", "cpu_small.yaml", SHARP),
    "lafs_cls": (
        "lafs with the CLS feature and local views as mosaics (the published layout)",
        "cpu_small.yaml",
        {**LOCAL_GRID, **SHARP, "views.local_layout": "mosaic", "model.kwargs.ssl_pool": "cls"},
    ),
    "lafs_big": (
        "lafs with a wider, deeper ViT (dim 192, 6 blocks, 3 heads, MLP 768)",
        "cpu_small.yaml",
        {**LOCAL_GRID, **SHARP, **{f"model.kwargs.{k}": v for k, v in BIG_MODEL.items()}},
    ),
}
ARMS = ("lafs", "lafs_global", "dino_randomcrop")
# name -> (method, CPU minutes, unlabelled data); shortest first so that every method has a
# result early, the longest next so that it is never the last one running alone
RUNS: dict[str, tuple[str, int, str]] = {
    "lafs_tt07_30": ("lafs_tt07", 30, "pool"),
    "lafs_global_30": ("lafs_global", 30, "pool"),
    "dino_randomcrop_30": ("dino_randomcrop", 30, "pool"),
    "lafs_30": ("lafs", 30, "pool"),
    "lafs_global_sharp_30": ("lafs_global_sharp", 30, "pool"),
    "lafs_cls_30": ("lafs_cls", 30, "pool"),
    "lafs_big_30": ("lafs_big", 30, "pool"),
    "lafs_300": ("lafs", 300, "pool"),
    "lafs_120": ("lafs", 120, "pool"),
    "lafs_global_120": ("lafs_global", 120, "pool"),
    "dino_randomcrop_120": ("dino_randomcrop", 120, "pool"),
    "lafs_celeba_120": ("lafs", 120, "celeba"),
}
SOURCES = {
    "pool": ["utkface-112", "celeba-112"],
    "celeba": ["celeba-112"],
}
READOUTS = ("raw", "whitened", "wide")
# features scored without any training: name -> (table label, model kwargs over cpu_small's)
BASELINES = {
    "random_init": ("random init", {}),
    "random_init_big": ("random init, lafs_big's network", BIG_MODEL),
    "raw_pixels": ("raw pixels", {}),
}
SHOTS = {"1": 1, "2": 2, "5": 5, "all": None}
KSHOT_STEPS = 60
KSHOT_PROTOCOL = {
    "adapter.head_init": "whiten",
    "loss.classifier_init": "imprint",
    "optim.lr": 3e-4,
}


def lafs_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lafslib.cli", *args]


def run_logged(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` with one torch thread, appending its output to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"study_pool: {shlex.join(cmd)} failed ({done.returncode}); see {log}")


def pretrain_settings(name: str, run: Path) -> list[str]:
    method, minutes, data = RUNS[name]
    sources = [SHARED_DATA / s for s in SOURCES[data]]
    items = {
        **METHODS[method][2],
        "run.output_dir": run,
        "run.max_cpu_minutes": minutes,
        "run.threads": 1,
        "run.checkpoint_every": 100,
        "run.tensorboard": "false",
        "optim.epochs": 40,
        "data.train": "[" + ",".join(str(s / "images") for s in sources) + "]",
        "data.landmarks": "[" + ",".join(str(s / "landmarks5.csv") for s in sources) + "]",
    }
    return [a for k, v in items.items() for a in ("--set", f"{k}={v}")]


def pretrain(name: str, out: Path) -> Path:
    """Pretrain (or resume) run ``name`` and export its teacher; the export folder."""
    run = out / name
    export = export_dir(out, name)
    if not (export / "model.json").is_file():
        run.mkdir(parents=True, exist_ok=True)
        recipe = RECIPES / METHODS[RUNS[name][0]][1]
        log = out / f"{name}.log"
        run_logged(
            lafs_cmd("pretrain", str(recipe), "--resume", "auto", *pretrain_settings(name, run)),
            log,
        )
        run_logged(lafs_cmd("export", str(run), "--out", str(export)), log)
    return export


def score(name: str, out: Path) -> dict[str, Any]:
    """Scores of run ``name`` (or of a feature in BASELINES), computed once by a
    one-thread child process and kept in ``scores/<name>.json``."""
    path = out / "scores" / f"{name}.json"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, __file__, "--out", str(out), "--score", name]
        run_logged(cmd, out / f"score_{name}.log")
    return json.loads(path.read_text())


def score_child(name: str, out: Path, lfw_path: Path) -> None:
    """``--score NAME``: score one feature (this process, one thread)."""
    import torch
    from pool_scores import score_export, score_pixels

    from lafslib.config import load_recipe
    from lafslib.data.verification import load_bin
    from lafslib.models import create_model, save_export

    torch.set_num_threads(1)
    t0 = time.process_time()
    pool = load_pool(out)
    lfw, issame = load_bin(lfw_path)
    if name in BASELINES:
        cfg = load_recipe(RECIPES / "cpu_small.yaml")
        torch.manual_seed(cfg.run.seed)  # pretraining seeds its model the same way
        model = create_model(cfg.model.name, **{**cfg.model.kwargs, **BASELINES[name][1]}).eval()
        if name == "raw_pixels":  # as many components as the SSL feature has
            result = score_pixels(pool, lfw, issame, model.ssl_dim)
        else:
            result = score_export(save_export(model, out / name, "ssl"), pool, lfw, issame)
    else:
        run, _, step = name.partition("@")
        result = score_export(export_dir(out, name), pool, lfw, issame)
        metrics = [json.loads(x) for x in (out / run / "metrics.jsonl").read_text().splitlines()]
        logged = [m for m in metrics if "train/cpu_minutes" in m]
        last = [m for m in logged if m["step"] == int(step)][-1] if step else logged[-1]
        result["run"] = {
            "steps": last["step"],
            "epochs": last["step"] * 128 / len(pool) if RUNS[run][2] == "pool" else None,
            "cpu_minutes": last["train/cpu_minutes"],
            "loss": last.get("train/loss"),
        }
    result["score_cpu_minutes"] = (time.process_time() - t0) / 60
    (out / "scores").mkdir(exist_ok=True)
    (out / "scores" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


def export_dir(out: Path, name: str) -> Path:
    """Export folder of run ``name``, or of its snapshot at a step for ``RUN@STEP``."""
    run, _, step = name.partition("@")
    return out / run / "snapshots" / f"step{step}" if step else out / run / "export"


def snapshot(run: str, out: Path) -> dict[str, Any]:
    """``--snapshot RUN``: score the latest checkpoint of a run in progress (a point on its
    learning curve, at the learning rate of that moment, not a finished schedule), kept in
    ``scores/RUN@STEP.json``; the report lists these points under the finished runs."""
    checkpoints = sorted((out / run / "checkpoints").glob("step_*.pt"))
    if not checkpoints:
        raise SystemExit(f"study_pool: --snapshot {run}: no checkpoint in {out / run}")
    step = int(checkpoints[-1].stem.removeprefix("step_"))
    export = export_dir(out, f"{run}@{step}")
    if not (export / "model.json").is_file():
        cmd = lafs_cmd("export", str(checkpoints[-1]), "--out", str(export), "--overwrite")
        run_logged(cmd, out / f"score_{run}@{step}.log")
    return score(f"{run}@{step}", out)


def load_pool(out: Path) -> np.ndarray:
    """Every pool face as uint8 (N, 112, 112, 3), decoded once into ``pool.npy``."""
    from lafslib.io import list_images, read_image

    cache = out / "pool.npy"
    if not cache.is_file():
        roots = [SHARED_DATA / s / "images" for s in SOURCES["pool"]]
        faces = np.stack([read_image(r / f) for r in roots for f in list_images(r)])
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, faces)
        tmp.replace(cache)
    return np.load(cache, mmap_mode="r")


def finetune(init: str | None, shots: str, seed: int, out: Path, lfw: Path) -> dict[str, Any]:
    """One k-shot finetuning from the teacher of run ``init`` (None: scratch), kept in
    ``kshot/<init or scratch>_<shots>_s<seed>.json``, so that a draw from another teacher is
    never taken for this one's."""
    tag = f"{init or 'scratch'}_{shots}_s{seed}"
    path = out / "kshot" / f"{tag}.json"
    if path.is_file():
        return json.loads(path.read_text())
    path.parent.mkdir(exist_ok=True)
    run = out / "kshot" / tag
    if run.exists():  # an interrupted finetuning starts again: it is short
        subprocess.run(["rm", "-rf", str(run), str(out / "kshot" / f"eval_{tag}")], check=True)
    items: dict[str, Any] = {"eval.bins": "[]", "run.seed": seed, "run.threads": 1}
    if SHOTS[shots] is not None:
        per_epoch = IDENTITIES * SHOTS[shots] // FINETUNE_BATCH
        items |= {
            "data.images_per_identity": SHOTS[shots],
            "optim.epochs": max(1, round(KSHOT_STEPS / per_epoch)),
            **KSHOT_PROTOCOL,
        }
    settings = [a for k, v in items.items() for a in ("--set", f"{k}={v}")]
    os.environ["OMP_NUM_THREADS"] = "1"
    start = export_dir(out, init) if init else None
    r = finetune_and_score(run, start, lfw, out / "kshot" / f"eval_{tag}", *settings)
    keep = {k: r[k] for k in ("accuracy", "accuracy_std", "steps", "cpu_minutes")}
    path.write_text(json.dumps(keep, indent=2) + "\n")
    return keep


def pct(r: dict[str, float]) -> str:
    return f"{100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}"


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean and standard error of the paired differences ``a - b``."""
    d = np.array(a) - np.array(b)
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d)))}


def spread(values: list[float]) -> dict[str, Any]:
    v = np.array(values)
    return {"mean": float(v.mean()), "se": float(v.std(ddof=1) / np.sqrt(len(v))), "draws": len(v)}


def best_lafs(scores: dict[str, dict[str, Any]]) -> str:
    """The ``lafs`` pool run with the best whitened SSL-only accuracy."""
    runs = [n for n, (m, _, d) in RUNS.items() if m == "lafs" and d == "pool"]
    return max(runs, key=lambda n: scores[n]["whitened"]["accuracy"])


def run_row(label: str, s: dict[str, Any]) -> list[Any]:
    """One table row: arm, CPU minutes measured, steps, epochs, raw / whitened / wide accuracy."""
    r = s["run"]
    epochs = r["epochs"] if r["epochs"] is not None else r["steps"] * 128 / 6019
    row = [label, f"{r['cpu_minutes']:.0f}", r["steps"], f"{epochs:.1f}"]
    return [*row, *(pct(s[c]) for c in READOUTS)]


def snapshot_order(path: Path) -> tuple[str, int]:
    run, _, step = path.stem.partition("@")
    return run, int(step)


def report(out: Path, scores: dict, kshot: dict, draws: int, wall: float) -> None:
    """study_pool.json (its ``data`` block exactly as issue 30 asks) and its table."""
    ssl: dict[str, Any] = {m: {"budgets": []} for m in ARMS}
    rows = []
    for name, (method, minutes, data) in RUNS.items():
        s = scores[name]
        if data == "pool" and method in ARMS:
            ssl[method]["budgets"].append(
                {
                    "cpu_minutes": minutes,
                    "raw": s["raw"]["accuracy"],
                    "whitened": s["whitened"]["accuracy"],
                    "whitened_std": s["whitened"]["accuracy_std"],
                    "wide": s["wide"]["accuracy"],
                }
            )
        rows.append(run_row(f"{method}, {data}", s))
    for arm in ssl.values():
        arm["budgets"].sort(key=lambda b: b["cpu_minutes"])
    for path in sorted((out / "scores").glob("*@*.json"), key=snapshot_order):
        run, _, step = path.stem.partition("@")
        s = json.loads(path.read_text())
        label = f"{RUNS[run][0]}, {RUNS[run][2]}: {run} at step {step} (learning curve)"
        rows.append(run_row(label, s))
    for name, (label, _) in BASELINES.items():
        rows.append([label, 0, "-", "-", *(pct(scores[name][c]) for c in READOUTS)])
    best = best_lafs(scores)
    k_shot: dict[str, Any] = {}
    krows = []
    for shots in SHOTS:
        acc = {
            s: [kshot[(s, shots, seed)]["accuracy"] for seed in range(draws)]
            for s in ("lafs", "scratch")
        }
        k_shot[shots] = {
            "lafs": spread(acc["lafs"]),
            "scratch": spread(acc["scratch"]),
            "diff": paired(acc["lafs"], acc["scratch"]),
        }
        k = k_shot[shots]
        krows.append(
            [
                shots,
                kshot[("lafs", shots, 0)]["steps"],
                f"{100 * k['lafs']['mean']:.2f} +- {100 * k['lafs']['se']:.2f}",
                f"{100 * k['scratch']['mean']:.2f} +- {100 * k['scratch']['se']:.2f}",
                f"{100 * k['diff']['mean']:+.2f} +- {100 * k['diff']['se']:.2f}",
            ]
        )
    data = {
        "pool_images": int(len(load_pool(out))),
        "ssl_only": ssl,
        "baselines": {
            n: {c: scores[n][c]["accuracy"] for c in ("raw", "whitened", "wide")}
            for n in ("random_init", "raw_pixels")  # the schema: these two
        },
        "pool_ablation": {
            tag: {
                "cpu_minutes": round(scores[run]["run"]["cpu_minutes"], 1),
                "whitened": scores[run]["whitened"]["accuracy"],
            }
            for tag, run in (("celeba_only", "lafs_celeba_120"), ("pool", "lafs_120"))
        },
        "k_shot": k_shot,
    }
    table = (
        markdown_table(
            [
                "arm, unlabelled data",
                "CPU min",
                "steps",
                "epochs",
                "raw (%)",
                "whitened (%)",
                "wide (%)",
            ],
            rows,
        )
        + "\n\n"
        + markdown_table(
            [
                "images per identity",
                "steps",
                f"{best} teacher (%)",
                "scratch (%)",
                "teacher - scratch (paired)",
            ],
            krows,
        )
    )
    notes = (
        f"SSL-only: LFW (10-fold, flip) of the teacher's pooled feature raw, PCA-whitened on the "
        f"{data['pool_images']:,} pool faces (utkface-112 + celeba-112, no labels), and the wide "
        f"readout (token grid, top 512 pool PCs, shrinkage 1); +- fold std. Backbone (but for "
        f"lafs_big): ViT dim 128, 4 blocks, patch 16, flatten SSL feature, batch 128, one "
        f"thread per run, two runs side by side; epochs of the pool (of celeba-112 for the "
        f"celeba row). k-shot: 298 celeba-112 identities, mean +- s.e. over {draws} paired "
        f"draws (run.seed 0..{draws - 1}), "
        f"from the best whitened lafs budget ({best}); k-shot protocol: whitened head, imprinted "
        f"centres, lr 3e-4, ~{KSHOT_STEPS} steps (fixed from one_shot_draws.py before these "
        f"draws); all images: cpu_small_arcface.yaml, 3 epochs. Wall of this invocation "
        f"{wall / 60:.0f} min (runs resume across sessions). Runs: {out}."
    )
    write_result(
        "study_pool",
        "Pool study: many unlabelled faces, few labels (utkface-112 + celeba-112 -> LFW)",
        table,
        shlex.join(["python", "benchmarks/study/study_pool.py", *sys.argv[1:]]),
        data,
        notes,
    )
    print(table)
    print(notes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "study_pool")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--draws", type=int, default=3, help="paired k-shot draws")
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw" / "lfw.bin")
    parser.add_argument("--stop-after", choices=["pretrain", "kshot"], default=None)
    parser.add_argument(
        "--snapshot", metavar="RUN", choices=RUNS, help="score the latest checkpoint of RUN"
    )
    parser.add_argument(
        "--run", metavar="RUN", choices=RUNS, help="pretrain (or resume) and score RUN only"
    )
    parser.add_argument("--score", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.out.resolve()
    if args.score:
        score_child(args.score, out, args.lfw)
        return
    if args.snapshot:
        print(json.dumps(snapshot(args.snapshot, out), indent=2))
        return
    if args.run:
        pretrain(args.run, out)
        print(json.dumps(score(args.run, out), indent=2))
        return
    if args.draws < 2 or args.jobs < 1:
        raise SystemExit("study_pool: --draws must be >= 2 and --jobs >= 1")
    for need in [args.lfw, *(SHARED_DATA / s / "landmarks5.csv" for s in SOURCES["pool"])]:
        if not need.exists():
            raise SystemExit(f"study_pool: {need} not found (see ../shared/data/README.md)")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_pool(out)

    def arm(name: str) -> dict[str, Any]:
        if name in RUNS:
            pretrain(name, out)
        result = score(name, out)
        print(f"study_pool: {name} done: {json.dumps(result)}", flush=True)
        return result

    names = [*RUNS, *BASELINES]
    with ThreadPoolExecutor(args.jobs) as pool:
        scores = dict(zip(names, pool.map(arm, names)))
    if args.stop_after == "pretrain":
        return
    best = best_lafs(scores)
    jobs = [(s, k, seed) for k in SHOTS for seed in range(args.draws) for s in ("lafs", "scratch")]

    def one(job: tuple[str, str, int]) -> dict[str, Any]:
        start, shots, seed = job
        return finetune(best if start == "lafs" else None, shots, seed, out, args.lfw)

    with ThreadPoolExecutor(args.jobs) as pool:
        kshot = dict(zip(jobs, pool.map(one, jobs)))
    if args.stop_after == "kshot":
        return
    report(out, scores, kshot, args.draws, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
