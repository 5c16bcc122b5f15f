"""Does any 1-shot finetuning protocol let the LAFS teacher beat scratch?

Usage: python benchmarks/study/few_shot_protocols.py [--init runs/study/pretrain_lafs/export]
       [--out runs/few_shot] [--only PROTOCOL ...]

The study (study_cpu_small.py) finetunes with one recipe (recipes/finetune/cpu_small_arcface.yaml,
60 steps of 64 on one image of each of the 298 celeba-112 identities). Here the same 1-shot
subset and step count are finetuned from the study's LAFS teacher and from scratch under
protocol variants that are meant to keep pretrained features: imprinted class centres, a
linear probe (backbone frozen), a lower learning rate, a steeper layer-wise decay, a shorter
run, and an embedding head whitened on the training images (adapter.head_init=whiten); two
rows at lr 1e-12 measure where finetuning starts, through a random or a whitened head. Each
row is scored on all of lfw.bin (10-fold, flip). Writes benchmarks/results/few_shot.json and
its BENCHMARKS.md section. ``--only`` runs the named protocols and keeps the other rows of
the last result if it was made from the same ``--init`` (the runs are deterministic: a rerun of
a row gives the same figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import RESULTS, ROOT, SHARED_DATA, accuracy_pct, markdown_table, publish_result  # noqa: E402
from study_cpu_small import (  # noqa: E402
    FEW_SHOT_STEPS,
    FINETUNE_BATCH,
    IDENTITIES,
    finetune_and_score,
    sets,
)

PROTOCOLS: dict[str, tuple[str, dict[str, Any], int]] = {
    "recipe": ("the study's recipe (lr 1e-3, layer decay 0.75)", {}, FEW_SHOT_STEPS),
    "imprint": (
        "class centres imprinted from the start",
        {"loss.classifier_init": "imprint"},
        FEW_SHOT_STEPS,
    ),
    "linear": ("linear probe: embedding head only", {"adapter.mode": "linear"}, FEW_SHOT_STEPS),
    "lr3e-4": ("lr 3e-4", {"optim.lr": 3e-4}, FEW_SHOT_STEPS),
    "ld05": ("layer decay 0.5", {"adapter.layer_decay": 0.5}, FEW_SHOT_STEPS),
    "short": ("16 steps", {}, 16),
    "start": (
        "the starting point: lr 1e-12 (random head; BatchNorm statistics of the 298 images)",
        {"optim.lr": 1e-12},
        FEW_SHOT_STEPS,
    ),
    "whiten_start": (
        "the starting point with the whitened embedding head (lr 1e-12)",
        {"adapter.head_init": "whiten", "optim.lr": 1e-12},
        FEW_SHOT_STEPS,
    ),
    "whiten": (
        "embedding head whitened on the 298 images",
        {"adapter.head_init": "whiten"},
        FEW_SHOT_STEPS,
    ),
    "whiten_imprint": (
        "whitened head + imprinted centres",
        {"adapter.head_init": "whiten", "loss.classifier_init": "imprint"},
        FEW_SHOT_STEPS,
    ),
    "whiten_imprint_lr3e-4": (
        "whitened head + imprinted centres, lr 3e-4",
        {"adapter.head_init": "whiten", "loss.classifier_init": "imprint", "optim.lr": 3e-4},
        FEW_SHOT_STEPS,
    ),
}


def previous_rows(init: Path) -> dict[str, dict[str, Any]]:
    """The protocol rows of the last result, if it was made from ``init``."""
    path = RESULTS / "few_shot.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())["data"]
    return data["protocols"] if Path(data["init"]) == init.resolve() else {}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_init = ROOT / "runs" / "study" / "pretrain_lafs" / "export"
    parser.add_argument("--init", type=Path, default=default_init, help="LAFS teacher export")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "few_shot")
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw" / "lfw.bin")
    parser.add_argument("--only", nargs="+", choices=list(PROTOCOLS), metavar="PROTOCOL")
    args = parser.parse_args()
    out = args.out.resolve()
    if out.exists():
        raise SystemExit(f"few_shot: {out} exists; give another --out (runs are never overwritten)")
    for need in (args.init / "model.json", args.lfw):
        if not need.exists():
            raise SystemExit(
                f"few_shot: {need} not found (run benchmarks/study/study_cpu_small.py first)"
            )
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    steps_per_epoch = IDENTITIES // FINETUNE_BATCH
    kept = previous_rows(args.init) if args.only else {}
    results: dict[str, dict[str, Any]] = {}
    for key, (what, overrides, steps) in PROTOCOLS.items():
        if args.only and key not in args.only:
            if key in kept:
                results[key] = kept[key]
            continue
        results[key] = {"protocol": what, "overrides": overrides}
        for start, init in (("lafs", args.init), ("scratch", None)):
            run = out / f"{key}_{start}"
            epochs = max(1, round(steps / steps_per_epoch))
            settings = sets(optim__epochs=epochs, data__images_per_identity=1, eval__bins="[]")
            settings += [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
            r = finetune_and_score(run, init, args.lfw, out / f"eval_{run.name}", *settings)
            results[key][start] = {k: r[k] for k in ("accuracy", "accuracy_std", "steps")}

    rows = [
        [
            r["protocol"],
            r["lafs"]["steps"],
            accuracy_pct(r["lafs"]),
            accuracy_pct(r["scratch"]),
            f"{100 * (r['lafs']['accuracy'] - r['scratch']['accuracy']):+.2f}",
        ]
        for r in results.values()
    ]
    table = markdown_table(
        ["1-shot protocol", "steps", "from LAFS (%)", "from scratch (%)", "LAFS - scratch"], rows
    )
    best = {s: max(r[s]["accuracy"] for r in results.values()) for s in ("lafs", "scratch")}
    notes = (
        f"One image of each of the {IDENTITIES} celeba-112 identities, ArcFace, batch "
        f"{FINETUNE_BATCH}; LFW 10-fold with flip. LAFS start: {args.init}. Best of each start "
        f"over the protocols: LAFS {100 * best['lafs']:.2f}, scratch {100 * best['scratch']:.2f}. "
        f"Wall {(time.perf_counter() - t0) / 60:.1f} min."
    )
    data = {"init": str(args.init.resolve()), "protocols": results, "best": best}
    (out / "few_shot.json").write_text(json.dumps(data, indent=2) + "\n")
    publish_result(
        "few_shot",
        "1-shot finetuning protocols: LAFS teacher vs scratch (celeba-112 -> LFW)",
        table,
        data,
        notes,
    )


if __name__ == "__main__":
    main()
