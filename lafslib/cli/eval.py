"""``lafs eval``: verification, IJB-B/C and identification reports of an export."""

from __future__ import annotations

import argparse

from lafslib.cli.common import command

__all__ = ["add_eval"]


# ----------------------------------------------------------------------------- eval


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "eval",
        "Evaluate an exported model on insightface .bin verification sets (10-fold accuracy, "
        "VAL@FAR, TAR@FAR), the IJB-B/C 1:1 protocol (TAR@FAR, all N/D/F modes) and 1:N "
        "identification (DIR@FPIR, CMC): report.json, report.md, roc.png, roc_ijb.png in --out.",
        """
  lafs eval --model runs/demo/pretrain/export --bin ../shared/data/faces-mini/lfw_mini.bin
  lafs eval --model export/ --bin lfw.bin cfp_fp.bin agedb_30.bin --out reports/model --device cuda
  lafs eval --model export/ --ijb /data/IJB_release/IJBC --ijb-name IJBC --device cuda
  lafs eval --model export/ --ident gallery/ --probe probes/ --fpir 0.01 0.1
  lafs eval --model runs/cpu_small/export --bin lfw.bin --whiten ../shared/data/celeba-112/images
""",
    )
    p.add_argument(
        "--model",
        required=True,
        help="export folder (model.safetensors + model.json), or a published model "
        "hf://owner/repo[@revision] (a lafslib export or a CVLFace model on the Hugging Face Hub)",
    )
    p.add_argument("--bin", nargs="+", default=[], help="insightface .bin verification sets")
    p.add_argument("--out", default="eval_report", help="output folder")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-flip", action="store_true", help="disable the flip test")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="what runs the model: auto (onnxruntime when the export holds model.onnx, "
        "onnxruntime is installed and --device is cpu; else torch), torch or onnxruntime",
    )
    p.add_argument("--ijb", help="IJB folder with meta/ and loose_crop/ (1:1 protocol)")
    p.add_argument("--ijb-name", default="IJBC", help="IJBC or IJBB: prefix of the meta files")
    p.add_argument("--workers", type=int, default=4, help="image decoding threads for --ijb")
    p.add_argument("--ident", help="gallery folder <identity>/<image> for 1:N identification")
    p.add_argument(
        "--probe", help="probe folder <identity>/<image>; unknown identities are non-mated"
    )
    p.add_argument("--fpir", type=float, nargs="+", default=[0.01, 0.1], help="FPIR targets")
    p.add_argument(
        "--whiten",
        metavar="FOLDER",
        help="PCA-whiten every embedding as fitted on the aligned faces under FOLDER (labels "
        "unused): how self-supervised features compare beyond decorrelation",
    )
    p.add_argument(
        "--whiten-shrink",
        type=float,
        default=0.0,
        help="shrink the whitening's eigenvalues towards their mean by this share (default 0)",
    )
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from lafslib.evaluation.report import evaluate_export

    if (args.ident is None) != (args.probe is None):
        raise SystemExit("lafs eval: --ident and --probe go together")
    report = evaluate_export(
        args.model,
        args.bin,
        args.out,
        args.batch_size,
        not args.no_flip,
        args.device,
        ijb=args.ijb,
        ijb_name=args.ijb_name,
        ident=args.ident,
        probe=args.probe,
        workers=args.workers,
        fpirs=tuple(args.fpir),
        whiten=args.whiten,
        whiten_shrink=args.whiten_shrink,
        backend=args.backend,
    )
    if "whitening" in report:
        w = report["whitening"]
        print(f"whitened on {w['images']} faces of {w['folder']} ({w['skipped']} unreadable)")
    for name, r in report["results"].items():
        print(f"{name}: accuracy {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}")
        shown = [
            f"FAR={far} {'n/a' if t is None else format(t['similarity'], '.4f')}"
            for far, t in r.get("thresholds", {}).items()
        ]
        if shown:
            print(f"{name}: similarity thresholds {', '.join(shown)} (report.json@FAR)")
    if "ijb" in report:
        for mode, r in report["ijb"]["modes"].items():
            tar = r["tar_at_far"].get("0.0001")
            shown = "n/a" if tar is None else f"{100 * tar:.2f}"
            print(f"{report['ijb']['name']} {mode}: TAR@FAR=1e-4 {shown}")
    if "identification" in report:
        r = report["identification"]
        dirs = ", ".join(f"FPIR={k}: {100 * v:.2f}" for k, v in r["dir_at_fpir"].items())
        print(f"identification: DIR {dirs}; rank-1 {100 * r['rank_1']:.2f}")
    print(f"report: {args.out}/report.md")
    return 0
