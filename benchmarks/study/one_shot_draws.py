"""How large is the 1-shot gap between a pretrained start and scratch, over many 1-shot draws?

Usage: python benchmarks/study/one_shot_draws.py --init LAFS_EXPORT [--extra NAME=EXPORT ...]
       [--draws 5] [--protocols recipe whiten whiten_imprint_lr3e-4] [--jobs 2]
       [--out runs/one_shot_draws]

Each earlier 1-shot figure (study_cpu_small.py, few_shot_protocols.py, exemplar_baseline.py)
is one draw: one image per identity chosen with ``run.seed`` 0, one head initialisation, one
batch order. Here every protocol of few_shot_protocols.py named in ``--protocols`` runs for
seeds 0 .. draws-1 (``run.seed`` picks the image of each of the 298 identities, the random
weights and the batch order) from scratch, from ``--init`` ("lafs") and from each ``--extra``
export. Every finetuned export is scored on all of lfw.bin (10-fold, flip). Reported per
protocol and start: the mean over draws and its spread; per pretrained start, the paired
difference to scratch (same seed, same images) with its standard error over draws. ``--jobs``
runs that many finetunings side by side, one thread each. Writes
benchmarks/results/one_shot_draws.json and its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import ROOT, SHARED_DATA, markdown_table, publish_result  # noqa: E402
from few_shot_protocols import PROTOCOLS  # noqa: E402
from study_cpu_small import FINETUNE_BATCH, IDENTITIES, finetune_and_score, sets  # noqa: E402


def named_export(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=EXPORT, got {text!r}")
    return name, Path(path)


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, std over draws (ddof 1) and standard error of the mean, of fractions."""
    v = np.asarray(values)
    std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "std": std, "sem": std / np.sqrt(len(v)), "values": values}


def pct_spread(s: dict[str, Any], key: str = "std", signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{100 * s['mean']:{sign}.2f} +- {100 * s[key]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--init", type=Path, required=True, help="LAFS teacher export")
    parser.add_argument("--extra", type=named_export, nargs="*", default=[], metavar="NAME=EXPORT")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=list(PROTOCOLS),
        default=["recipe", "whiten", "whiten_imprint_lr3e-4"],
    )
    parser.add_argument("--jobs", type=int, default=2, help="finetunings side by side")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "one_shot_draws")
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw" / "lfw.bin")
    args = parser.parse_args()
    if args.draws < 2 or args.jobs < 1:
        raise SystemExit("one_shot_draws: --draws must be >= 2 and --jobs >= 1")
    starts: dict[str, Path | None] = {"scratch": None, "lafs": args.init, **dict(args.extra)}
    if len(starts) != 2 + len(args.extra):
        raise SystemExit(
            "one_shot_draws: --extra names must differ from each other and from "
            "'scratch' and 'lafs'"
        )
    out = args.out.resolve()
    if out.exists():
        raise SystemExit(f"one_shot_draws: {out} exists; give another --out (runs are kept)")
    for need in [args.lfw, *(p / "model.json" for p in starts.values() if p)]:
        if not need.exists():
            raise SystemExit(f"one_shot_draws: {need} not found")
    out.mkdir(parents=True)
    os.environ["OMP_NUM_THREADS"] = "1"  # lafs eval in each job: one thread, as the finetuning
    t0 = time.perf_counter()
    steps_per_epoch = IDENTITIES // FINETUNE_BATCH

    def one(job: tuple[str, str, int]) -> dict[str, Any]:
        protocol, start, seed = job
        _, overrides, steps = PROTOCOLS[protocol]
        run = out / f"{protocol}_{start}_s{seed}"
        settings = sets(
            optim__epochs=max(1, round(steps / steps_per_epoch)),
            data__images_per_identity=1,
            eval__bins="[]",
            run__seed=seed,
            run__threads=1,
        )
        settings += [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
        return finetune_and_score(run, starts[start], args.lfw, out / f"eval_{run.name}", *settings)

    jobs = [(p, s, seed) for p in args.protocols for seed in range(args.draws) for s in starts]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = dict(zip(jobs, pool.map(one, jobs)))

    results: dict[str, dict[str, Any]] = {}
    for p in args.protocols:
        acc = {s: [runs[(p, s, seed)]["accuracy"] for seed in range(args.draws)] for s in starts}
        fold_std = {
            s: float(np.mean([runs[(p, s, seed)]["accuracy_std"] for seed in range(args.draws)]))
            for s in starts
        }
        results[p] = {
            "protocol": PROTOCOLS[p][0],
            "steps": runs[(p, "scratch", 0)]["steps"],
            "accuracy": {s: spread(acc[s]) for s in starts},
            "mean_fold_std": fold_std,
            "minus_scratch": {
                s: spread([a - b for a, b in zip(acc[s], acc["scratch"])])
                for s in starts
                if s != "scratch"
            },
        }
    pretrained = [s for s in starts if s != "scratch"]
    header = ["1-shot protocol", "steps", *(f"{s} (%)" for s in starts)]
    header += [f"{s} - scratch (paired, +- s.e.)" for s in pretrained]
    rows = [
        [
            r["protocol"],
            r["steps"],
            *(pct_spread(r["accuracy"][s]) for s in starts),
            *(pct_spread(r["minus_scratch"][s], "sem", signed=True) for s in pretrained),
        ]
        for r in results.values()
    ]
    best = {s: max(r["accuracy"][s]["mean"] for r in results.values()) for s in starts}
    table = markdown_table(header, rows)
    notes = (
        f"Mean +- std over {args.draws} draws (run.seed 0..{args.draws - 1}: the image of each "
        f"of the {IDENTITIES} celeba-112 identities, the random weights, the batch order), each "
        f"draw scored on {args.lfw.name} (10-fold, flip; mean fold std "
        f"{100 * np.mean([v for r in results.values() for v in r['mean_fold_std'].values()]):.2f}"
        f"). Paired: the same seed from each start, mean +- standard error. Best protocol mean "
        f"per start: {', '.join(f'{s} {100 * b:.2f}' for s, b in best.items())}. Starts: "
        f"{', '.join(f'{s}={p}' for s, p in starts.items() if p)}. Batch {FINETUNE_BATCH}, "
        f"{args.jobs} runs side by side. Wall {(time.perf_counter() - t0) / 60:.1f} min."
    )
    data = {
        "starts": {s: str(p.resolve()) if p else None for s, p in starts.items()},
        "draws": args.draws,
        "protocols": results,
        "best": best,
    }
    publish_result(
        "one_shot_draws",
        "1-shot finetuning over many draws: pretrained starts vs scratch (celeba-112 -> LFW)",
        table,
        data,
        notes,
    )


if __name__ == "__main__":
    main()
