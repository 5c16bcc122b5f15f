"""Is the plateau DINO's, or the data's? An exemplar baseline, and 1-shot at longer budgets.

Usage: python benchmarks/study/exemplar_baseline.py [--init LAFS_EXPORT] [--out runs/exemplar]
       [--epochs 15] [--budgets 15 50 150]

Exemplar pretraining (Dosovitskiy et al., NeurIPS 2014, with an ArcFace margin): every one of
the 6,019 celeba-112 faces is its own class, so no label is used; the finetuning recipe
(recipes/finetune/cpu_small_arcface.yaml, same ViT) trains on a tree of symbolic links with
one folder per image (under --out; the data itself is not copied). Its export is scored on
LFW as the SSL-only figure. Then 1-shot finetuning (one image of each of the 298 identities)
from scratch, from the exemplar export and from --init (a LAFS teacher export, optional) at
each budget in --budgets (epochs of 4 steps: 15 is the study's 60 steps). Every export is
scored on all of lfw.bin (10-fold, flip). Writes benchmarks/results/exemplar.json and its
BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import ROOT, SHARED_DATA, accuracy_pct, markdown_table, publish_result  # noqa: E402
from study_cpu_small import (  # noqa: E402
    FINETUNE_BATCH,
    IDENTITIES,
    finetune_and_score,
    sets,
)


def exemplar_tree(celeba: Path, out: Path) -> tuple[Path, Path, int]:
    """One folder per image (symbolic links) and its landmarks file: (images, landmarks, n)."""
    images = out / "images"
    with open(celeba / "landmarks5.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    renamed = []
    for row in body:
        ident, name = row[0].split("/")
        folder = images / f"{ident}_{Path(name).stem}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to((celeba / "images" / row[0]).resolve())
        renamed.append([f"{folder.name}/{name}", *row[1:]])
    landmarks = out / "landmarks5.csv"
    with open(landmarks, "w", newline="") as f:
        csv.writer(f).writerows([header, *renamed])
    return images, landmarks, len(renamed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--init", type=Path, help="a LAFS teacher export to finetune as well")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "exemplar")
    parser.add_argument("--celeba", type=Path, default=SHARED_DATA / "celeba-112")
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw" / "lfw.bin")
    parser.add_argument("--epochs", type=int, default=15, help="exemplar pretraining epochs")
    parser.add_argument("--budgets", type=int, nargs="+", default=[15, 50, 150])
    args = parser.parse_args()
    out = args.out.resolve()
    if out.exists():
        raise SystemExit(f"exemplar: {out} exists; give another --out (runs are never overwritten)")
    needs = [args.celeba / "landmarks5.csv", args.lfw]
    needs += [args.init / "model.json"] if args.init else []
    for need in needs:
        if not need.exists():
            raise SystemExit(f"exemplar: {need} not found")
    out.mkdir(parents=True)
    t0 = time.perf_counter()

    images, landmarks, n = exemplar_tree(args.celeba, out / "exemplar_data")
    run = out / "exemplar"
    settings = sets(data__train=images, data__landmarks=landmarks, optim__epochs=args.epochs)
    ssl = finetune_and_score(
        run, None, args.lfw, out / "eval_exemplar", *settings, *sets(eval__bins="[]")
    )
    exemplar = {k: ssl[k] for k in ("accuracy", "accuracy_std", "steps", "cpu_minutes")}
    exemplar["classes"] = n

    starts = {"scratch": None, "exemplar": run / "export"}
    if args.init:
        starts["lafs"] = args.init
    one_shot: dict[str, dict[str, Any]] = {}
    for epochs in args.budgets:
        row: dict[str, Any] = {}
        for start, init in starts.items():
            ft = out / f"1shot_{start}_e{epochs}"
            settings = sets(optim__epochs=epochs, data__images_per_identity=1, eval__bins="[]")
            r = finetune_and_score(ft, init, args.lfw, out / f"eval_{ft.name}", *settings)
            row[start] = {"accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"]}
            row["steps"] = r["steps"]
        one_shot[str(epochs)] = row

    header = ["1-shot steps", *(f"from {s} (%)" for s in starts)]
    rows = [[r["steps"], *(accuracy_pct(r[s]) for s in starts)] for r in one_shot.values()]
    table = (
        markdown_table(
            ["SSL-only (no labels)", "steps", "CPU minutes", "LFW (%)"],
            [
                [
                    "exemplar ArcFace, one class per face",
                    exemplar["steps"],
                    f"{exemplar['cpu_minutes']:.1f}",
                    accuracy_pct(exemplar),
                ]
            ],
        )
        + "\n\n"
        + markdown_table(header, rows)
    )
    notes = (
        f"Exemplar pretraining: {n} classes (one per celeba-112 face), ArcFace as "
        f"recipes/finetune/cpu_small_arcface.yaml, {args.epochs} epochs. 1-shot: one image of "
        f"each of the {IDENTITIES} identities, batch {FINETUNE_BATCH}; LFW 10-fold with flip. "
        f"LAFS start: {args.init or 'none'}. Wall {(time.perf_counter() - t0) / 60:.1f} min."
    )
    data = {
        "init": str(args.init.resolve()) if args.init else None,
        "exemplar": exemplar,
        "one_shot": one_shot,
    }
    publish_result(
        "exemplar",
        "Exemplar pretraining baseline and 1-shot finetuning budgets (celeba-112 -> LFW)",
        table,
        data,
        notes,
    )


if __name__ == "__main__":
    main()
