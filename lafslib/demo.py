"""``make demo``: LAFS pretraining at demo size -> export -> ArcFace finetuning -> evaluation.

Uses the real faces of ``../shared/data/celeba-112`` (with their 5-point landmarks) when that
folder exists beside the repository (or ``LAFS_SHARED_DATA`` points to it), else procedural
synthetic faces with exact landmarks, so it runs offline on any machine in about a minute.

Usage: ``python -m lafslib.demo [--out runs/demo] [--steps N]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from lafslib.cli import main as lafs

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "demo"
RECIPE = RECIPES / "pretrain_demo.yaml"
FINETUNE_RECIPE = RECIPES / "finetune_demo.yaml"


def shared_data() -> Path | None:
    """The ../shared/data folder when present."""
    root = Path(
        os.environ.get("LAFS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    return root if (root / "celeba-112" / "images").is_dir() else None


def _verification_set(data: Path | None, out: Path) -> Path:
    """faces-mini's lfw_mini.bin, or 100 synthetic pairs (50 same identity) written as .bin."""
    if data is not None and (data / "faces-mini" / "lfw_mini.bin").is_file():
        return data / "faces-mini" / "lfw_mini.bin"
    from lafslib.data import render_face, write_bin

    images, issame = [], []
    for pair in range(100):
        same = pair % 2 == 0
        a, b = 1000 + pair, (1000 + pair) if same else (2000 + pair)
        images += [render_face(a, 0)["image"], render_face(b, 1)["image"]]
        issame.append(same)
    return write_bin(out / "synthetic_pairs.bin", images, issame)


def run(out: Path, steps: int | None) -> dict:
    """Pretrain, export, and return a summary dict."""
    data = shared_data()
    overrides = [f"run.output_dir={out / 'pretrain'}", "views.kind=lafs"]
    if data is not None:
        overrides += [
            f"data.train={data / 'celeba-112' / 'images'}",
            f"data.landmarks={data / 'celeba-112' / 'landmarks5.csv'}",
            "data.max_images=512",
        ]
    if steps is not None:
        overrides.append(f"run.max_steps={steps}")
    t0 = time.time()
    args = ["pretrain", str(RECIPE), "--resume", "auto"]
    for item in overrides:
        args += ["--set", item]
    if lafs(args) != 0:
        raise SystemExit("demo: pretraining failed")
    if lafs(["export", str(out / "pretrain")]) != 0:
        raise SystemExit("demo: export failed")
    ft_args = ["finetune", str(FINETUNE_RECIPE), "--init", str(out / "pretrain" / "export")]
    ft_args += ["--resume", "auto"]  # a rerun of the demo continues (or reuses) its runs
    ft_sets = [f"run.output_dir={out / 'finetune'}"]
    if data is not None:
        ft_sets += [f"data.train={data / 'celeba-112' / 'images'}", "data.max_images=1024"]
    if steps is not None:
        ft_sets.append(f"run.max_steps={steps}")
    for item in ft_sets:
        ft_args += ["--set", item]
    if lafs(ft_args) != 0:
        raise SystemExit("demo: finetuning failed")
    bin_path = _verification_set(data, out)
    eval_args = ["eval", "--model", str(out / "finetune" / "export"), "--bin", str(bin_path)]
    if lafs([*eval_args, "--out", str(out / "eval")]) != 0:
        raise SystemExit("demo: evaluation failed")
    report = json.loads((out / "eval" / "report.json").read_text())
    (result,) = report["results"].values()
    rows, ft_rows = (
        [json.loads(line) for line in (out / stage / "metrics.jsonl").read_text().splitlines()]
        for stage in ("pretrain", "finetune")
    )
    summary = {
        "data": str(data / "celeba-112") if data else "synthetic faces (lafslib.data.synthetic)",
        "pretrain_run": str(out / "pretrain"),
        "tensorboard": str(out),
        "pretrain_export": str(out / "pretrain" / "export"),
        "pretrain_steps": rows[-1]["step"],
        "pretrain_loss": f"{rows[0]['train/loss']:.3f} -> {rows[-1]['train/loss']:.3f}",
        "teacher_entropy": round(rows[-1]["train/teacher_entropy"], 3),
        "finetune_export": str(out / "finetune" / "export"),
        "finetune_steps": ft_rows[-1]["step"],
        "finetune_loss": f"{ft_rows[0]['train/loss']:.3f} -> {ft_rows[-1]['train/loss']:.3f}",
        "verification_set": str(bin_path),
        "verification_accuracy": round(result["accuracy"], 4),
        "report": str(out / "eval" / "report.md"),
        "minutes": round((time.time() - t0) / 60, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lafslib.demo``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo output folder")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    args = parser.parse_args(argv)
    summary = run(args.out, args.steps)
    print("\n== lafslib demo summary ==")
    for key, value in summary.items():
        print(f"{key:>24}: {value}")
    print(f"\nreport: {summary['report']}  (tensorboard --logdir {summary['tensorboard']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
