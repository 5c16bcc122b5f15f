"""The ``lafs`` command line: argument parsing only; the work happens in the library.

Each subcommand is one ``_add_<name>(subparsers)`` function below that declares its arguments
(with examples in the epilog) and a handler that imports what it needs lazily, so that
``lafs --help`` stays fast and never imports the training stack.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "build_parser"]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _command(
    sub: argparse._SubParsersAction, name: str, help_text: str, examples: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=_Formatter,
    )
    _add_debug(p, argparse.SUPPRESS)  # SUPPRESS: 'lafs --debug CMD' is not reset by CMD
    return p


def _add_debug(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of an error (also: LAFS_DEBUG=1)",
    )


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set optim.lr=1e-3 (repeatable)",
    )


# ----------------------------------------------------------------------------- show-config


def _add_show_config(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "show-config",
        "Print a recipe fully resolved (base: inheritance, --set overrides, defaults).",
        """
  lafs show-config recipes/pretrain/cpu_small.yaml
  lafs show-config recipes/pretrain/cpu_small.yaml --set optim.epochs=2 --set run.seed=1
""",
    )
    p.add_argument("recipe", help="YAML recipe file")
    _add_overrides(p)
    p.set_defaults(func=_run_show_config)


def _run_show_config(args: argparse.Namespace) -> int:
    from lafslib.config import dump_config, load_recipe

    print(dump_config(load_recipe(args.recipe, args.overrides)), end="")
    return 0


# ----------------------------------------------------------------------------- data


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "data",
        "Dataset tools: pack identity folders into insightface RecordIO, inspect sources.",
        """
  lafs data pack ../shared/data/faces-mini/identities faces.rec
  lafs data info faces.rec
  lafs data info ../shared/data/celeba-112/images --labelled
""",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    pack = _command(
        dsub,
        "pack",
        "Pack an identity-folder tree (one sub-folder per identity) into .rec/.idx with "
        "identity labels, plus a <name>.lst.csv sidecar of key,path,label.",
        """
  lafs data pack ../shared/data/faces-mini/identities out/faces.rec
""",
    )
    pack.add_argument("src", help="folder with one sub-folder of images per identity")
    pack.add_argument("out", help="output .rec path (.idx and .lst.csv are written beside it)")
    pack.add_argument("--quiet", action="store_true", help="no progress bar")
    pack.set_defaults(func=_run_data_pack)
    info = _command(
        dsub,
        "info",
        "Print the size, identities, landmark sidecar and unreadable images of a data source.",
        """
  lafs data info faces.rec
  lafs data info ../shared/data/celeba-112/images --labelled --check
""",
    )
    info.add_argument("source", help="image folder, .rec file, or 'synthetic'")
    info.add_argument("--labelled", action="store_true", help="one sub-folder per identity")
    info.add_argument("--check", action="store_true", help="decode every image and count bad ones")
    info.set_defaults(func=_run_data_info)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _run_data_pack(args: argparse.Namespace) -> int:
    import json

    from lafslib.data import pack_folder

    if not str(args.out).endswith(".rec"):
        raise ValueError(f"output must end in .rec, got {args.out}")
    summary = pack_folder(args.src, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _run_data_info(args: argparse.Namespace) -> int:
    import json
    import warnings

    from lafslib.data import open_dataset

    ds = open_dataset(args.source, labelled=args.labelled)
    info = {"source": args.source, "images": len(ds), "type": type(ds).__name__}
    if getattr(ds, "labelled", False) or args.labelled:
        info["identities"] = int(ds.num_classes)
    table = getattr(ds, "landmarks", None)
    if table is not None and hasattr(table, "source"):
        info["landmarks"] = {"file": table.source, "points": table.num_points}
    if args.check:
        from tqdm import tqdm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in tqdm(range(len(ds)), desc="check", unit="img"):
                try:
                    ds.sample(i)
                except Exception as exc:  # noqa: BLE001 - counted and reported below
                    info.setdefault("unreadable", []).append(str(exc))
        info["unreadable_count"] = len(info.get("unreadable", []))
    print(json.dumps(info, indent=2))
    if args.check and info["unreadable_count"] == len(ds):
        from lafslib.errors import DataError

        raise DataError(f"{args.source}: none of the {len(ds)} images is readable")
    return 0


# ----------------------------------------------------------------------------- pretrain


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "pretrain",
        "Self-supervised DINO / LAFS pretraining from a recipe (one process or under torchrun).",
        """
  lafs pretrain recipes/demo/pretrain_demo.yaml
  lafs pretrain recipes/pretrain/cpu_small.yaml --set optim.epochs=2 --resume auto
  torchrun --nproc_per_node 8 -m lafslib.cli pretrain recipes/pretrain/lafs_fvit_base_webface4m.yaml
""",
    )
    p.add_argument("recipe", help="YAML recipe with task: pretrain")
    _add_overrides(p)
    _add_run_dir_options(p)
    p.set_defaults(func=_run_pretrain)


def _add_run_dir_options(p: argparse.ArgumentParser) -> None:
    """--resume / --overwrite: what to do with a run directory that already holds a run."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        default=None,
        metavar="auto|PATH",
        help="continue from the run's latest checkpoint (auto) or from a checkpoint file; "
        "without it, run.output_dir must be empty or new",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a run directory that holds a run: the old run is moved to "
        "<dir>.replaced-<time> (never deleted)",
    )


def _run_pretrain(args: argparse.Namespace) -> int:
    from lafslib.config import ConfigError, load_recipe

    cfg = load_recipe(args.recipe, args.overrides)  # before the training stack is imported
    if cfg.task != "pretrain":
        raise ConfigError(f"{args.recipe}: 'lafs pretrain' needs task: pretrain, got {cfg.task}")
    from lafslib.engine.pretrain import pretrain

    run_dir = pretrain(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"run directory: {run_dir}")
    return 0


# ----------------------------------------------------------------------------- export


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "export",
        "Export a run's backbone (the teacher after pretraining) as safetensors + model.json, "
        "optionally ONNX.",
        """
  lafs export runs/demo/pretrain
  lafs export runs/demo/pretrain --out exports/demo --onnx
""",
    )
    p.add_argument("run", help="run directory (latest checkpoint) or a checkpoint file")
    p.add_argument("--out", default=None, help="output folder (default: RUN/export)")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write model.onnx (inputs images and, for KP-RPE models, keypoints (B, 5, 2); "
        "dynamic batch; checked with onnxruntime; needs [onnx])",
    )
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from lafslib.engine.export import export_run

    print(f"exported to {export_run(args.run, args.out, args.onnx)}")
    return 0


# ----------------------------------------------------------------------------- convert


_CONVERT_FORMATS = ("cvlface", "lafs", "partfvit", "dino", "timm", "dinov2", "insightface")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "convert",
        "Convert a checkpoint of a reference project (insightface, CVLFace, LAFS, Part fViT, "
        "DINO, timm/DINOv2/CLIP) into a lafslib export folder. Every key is loaded, reported as "
        "skipped (e.g. a margin-loss classifier) or reported as an error.",
        """
  lafs convert backbone.pth exports/ir50 --format insightface
  lafs convert cvlface_ir101/model.pt exports/cvl_ir101 --format cvlface
  lafs convert lafs/checkpoint.pth exports/lafs --format lafs --allow-missing 'head.*'
  lafs convert part_fvit.pth exports/part_fvit --format partfvit --allow-missing 'vit.head.*'
  lafs convert dinov2_vits14.pth exports/dinov2_s --format dinov2 --model vit_small_patch14_dinov2
""",
    )
    p.add_argument("src", help="checkpoint file (.pth/.pt/.safetensors) or a folder with one")
    p.add_argument("out", help="output export folder (model.safetensors + model.json)")
    p.add_argument(
        "--format", required=True, choices=_CONVERT_FORMATS, dest="fmt", help="source layout"
    )
    p.add_argument(
        "--model",
        default=None,
        help="target lafslib model name (timm name for --format timm/dinov2); inferred if omitted",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="factory argument overriding the inferred ones, VALUE parsed as JSON when possible "
        "(e.g. --model-arg num_heads=11; repeatable)",
    )
    p.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="PATTERN",
        help="glob of target keys that may stay untrained (repeatable)",
    )
    p.add_argument(
        "--branch",
        default="teacher",
        choices=("teacher", "student"),
        help="which network of a DINO/LAFS training checkpoint",
    )
    p.add_argument("--img-size", type=int, default=None, help="input size for timm/dinov2 models")
    p.add_argument(
        "--bgr",
        action="store_true",
        default=None,
        help="the checkpoint expects BGR input (folded into the first conv; CVLFace: read "
        "from model.yaml when omitted)",
    )
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    import json

    from lafslib.models.convert import convert_to_export

    model_kwargs = {}
    for item in args.model_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            model_kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            model_kwargs[key] = value
    out, report = convert_to_export(
        args.src,
        args.out,
        args.fmt,
        model_name=args.model,
        model_kwargs=model_kwargs,
        allow_missing=args.allow_missing,
        branch=args.branch,
        img_size=args.img_size,
        bgr=args.bgr,
    )
    print(report.summary())
    print(f"exported to {out}")
    return 0


# ----------------------------------------------------------------------------- eval


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = _command(
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
    p.add_argument("--model", required=True, help="export folder (model.safetensors + model.json)")
    p.add_argument("--bin", nargs="+", default=[], help="insightface .bin verification sets")
    p.add_argument("--out", default="eval_report", help="output folder")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-flip", action="store_true", help="disable the flip test")
    p.add_argument("--device", default="cpu")
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
    )
    if "whitening" in report:
        w = report["whitening"]
        print(f"whitened on {w['images']} faces of {w['folder']} ({w['skipped']} unreadable)")
    for name, r in report["results"].items():
        print(f"{name}: accuracy {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}")
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


# ----------------------------------------------------------------------------- finetune


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "finetune",
        "Supervised adaptation with margin losses (ArcFace, CosFace, AdaFace, FRABSM) from a "
        "recipe, optionally starting from an exported backbone; exports to RUN/export.",
        """
  lafs finetune recipes/demo/finetune_demo.yaml
  lafs finetune recipes/demo/finetune_demo.yaml --init runs/demo/pretrain/export
  lafs finetune recipes/demo/finetune_demo.yaml --set adapter.mode=linear --resume auto
""",
    )
    p.add_argument("recipe", help="YAML recipe with task: finetune")
    p.add_argument("--init", default=None, help="export folder to start from (sets init:)")
    _add_overrides(p)
    _add_run_dir_options(p)
    p.set_defaults(func=_run_finetune)


def _run_finetune(args: argparse.Namespace) -> int:
    from lafslib.config import ConfigError, load_recipe

    overrides = list(args.overrides) + ([f"init={args.init}"] if args.init else [])
    cfg = load_recipe(args.recipe, overrides)  # before the training stack is imported
    if cfg.task != "finetune":
        raise ConfigError(f"{args.recipe}: 'lafs finetune' needs task: finetune, got {cfg.task}")
    from lafslib.engine.finetune import finetune

    print(f"run directory: {finetune(cfg, resume=args.resume, overwrite=args.overwrite)}")
    return 0


# ----------------------------------------------------------------------------- show-views


def _add_show_views(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "show-views",
        "Draw the views a pretraining recipe makes of one face (the face with its landmark "
        "grid, then every view as the model sees it) to a PNG.",
        """
  lafs show-views ../shared/data/celeba-112/images/07201/001085.jpg --out views.png
  lafs show-views face.jpg --recipe recipes/pretrain/cpu_small.yaml --landmarks lm.csv --out v.png
""",
    )
    p.add_argument("image", help="an aligned face image")
    p.add_argument("--recipe", default=None, help="pretraining recipe (its views section)")
    p.add_argument(
        "--landmarks",
        default="auto",
        help="sidecar with this image's landmarks (auto: the one beside its dataset; "
        "none: the template)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="views.png", help="output PNG")
    p.set_defaults(func=_run_show_views)


def _run_show_views(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from PIL import Image

    from lafslib.config import ViewsConfig, load_recipe
    from lafslib.data.folder import find_sidecar
    from lafslib.data.images import read_image
    from lafslib.engine.pretrain import build_views
    from lafslib.landmarks.store import load_landmarks
    from lafslib.viz import views_grid

    views_cfg = load_recipe(args.recipe).views if args.recipe else ViewsConfig()
    image_path = Path(args.image)
    sample = {"image": read_image(image_path), "label": -1}
    sidecar = find_sidecar(image_path.parent.parent) if args.landmarks == "auto" else None
    if args.landmarks not in ("auto", "none"):
        sidecar = Path(args.landmarks)
    if sidecar is not None:
        pts = _sidecar_points(load_landmarks(sidecar), image_path)
        if pts is not None:
            sample["landmarks"] = pts
    torch.manual_seed(args.seed)
    views = build_views(views_cfg)(sample)
    points = None
    if views_cfg.kind == "lafs":
        from lafslib.landmarks.grid import landmark_grid
        from lafslib.landmarks.template import template_for_size

        five = sample.get("landmarks", template_for_size(sample["image"].shape[0]))
        points = landmark_grid(
            five,
            int(views_cfg.num_landmarks**0.5),
            sample["image"].shape[0],
            method=views_cfg.landmark_grid,
        )
    grid = views_grid(sample, views, points)
    Image.fromarray(grid).save(args.out)
    source = "sidecar" if "landmarks" in sample else "template"
    print(f"{len(views)} views ({views_cfg.kind}, landmarks from {source}) -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- landmarks


def _add_detector_options(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--detector",
        default=default,
        help="dlib (HOG + 68 points), dlib-cnn, dlib5, face-alignment (FAN), "
        "sidecar (with --landmarks-file) or learned (with --weights EXPORT)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="face-alignment: folder with the FAN weight files (default "
        "$TORCH_HOME/hub/checkpoints); learned: the exported Part fViT folder",
    )
    p.add_argument(
        "--boxes",
        default=None,
        help="face-alignment face boxes: sfd (its detector), dlib (no detector weights) "
        "or full (the whole image); dlib: full uses the whole image as the face box",
    )
    p.add_argument("--landmarks-file", default=None, help="sidecar for --detector sidecar")
    p.add_argument("--upsample", type=int, default=1, help="dlib: upsampling before detection")
    p.add_argument("--device", default="auto", help="face-alignment / learned: torch device")


def _detector_kwargs(args: argparse.Namespace) -> dict:
    name = args.detector
    if name in ("dlib", "dlib-cnn", "dlib5"):
        out = {"upsample": args.upsample}
        if args.boxes == "full":
            out["detector"] = "full"
        return out
    if name == "face-alignment":
        boxes = args.boxes or "sfd"
        if boxes == "dlib":
            from lafslib.landmarks.detectors import DlibDetector

            boxes = DlibDetector(upsample=args.upsample)
        return {"boxes": boxes, "weights_dir": args.weights, "device": args.device}
    if name == "sidecar":
        if not args.landmarks_file:
            raise ValueError("--detector sidecar needs --landmarks-file FILE")
        return {"path": args.landmarks_file}
    if name == "learned":
        if not args.weights:
            raise ValueError("--detector learned needs --weights EXPORT_DIR (a Part fViT export)")
        device = "cpu" if args.device == "auto" else args.device
        return {"export": args.weights, "device": device}
    from lafslib.landmarks.detectors import DETECTORS

    raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")


def _tqdm(quiet: bool, desc: str) -> Callable | None:
    if quiet:
        return None
    from tqdm import tqdm

    return lambda it, n: tqdm(it, total=n, desc=desc, unit="img")


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "align",
        "Detect, align (ArcFace 5-point template) and crop the faces of raw photos; write the "
        "crops in the same tree under DST with landmarks5.csv (and landmarks68.csv) in crop "
        "pixels, and align_report.json listing photos with no face. Resumable; inputs are "
        "never modified.",
        """
  lafs align ../shared/data/celeba-raw-mini aligned/ --detector dlib --workers 2
  lafs align photos/ aligned/ --detector face-alignment --weights ~/fan_weights --faces all
  lafs align photos/ aligned/ --detector face-alignment --boxes dlib   # no S3FD weights
""",
    )
    p.add_argument("src", help="folder of photos (any tree)")
    p.add_argument("dst", help="output folder (outside SRC)")
    _add_detector_options(p, "dlib")
    p.add_argument("--size", type=int, default=112, help="side of the aligned crops")
    p.add_argument(
        "--faces", choices=("largest", "all"), default="largest", help="faces kept per photo"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_align)


def _run_align(args: argparse.Namespace) -> int:
    import json

    from lafslib.landmarks.align import REPORT, align_folder

    if args.detector == "face-alignment" and args.boxes == "dlib" and args.workers > 1:
        raise ValueError("--boxes dlib with --workers > 1 is not supported; use --workers 1")
    report = align_folder(
        args.src,
        args.dst,
        args.detector,
        _detector_kwargs(args),
        size=args.size,
        policy=args.faces,
        workers=args.workers,
        progress=_tqdm(args.quiet, "align"),
    )
    summary = report.to_dict()
    summary["no_face"] = len(report.no_face)
    summary["unreadable"] = len(report.unreadable)
    print(json.dumps(summary, indent=2))
    print(f"report: {args.dst}/{REPORT}")
    return 0


def _add_landmarks(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "landmarks",
        "Write a landmark sidecar for an already-aligned dataset (folder or .rec) with a "
        "detector, or the canonical ArcFace template with --template. Images where no face "
        "is found get the template and are listed in the printed report.",
        """
  lafs landmarks ../shared/data/faces-mini/identities --out lm.csv --detector dlib
  lafs landmarks faces.rec --out faces.landmarks.npz --template
  lafs landmarks aligned/ --out lm68.csv --detector face-alignment --boxes full --points 68
""",
    )
    p.add_argument("data", help="aligned image folder or .rec file")
    p.add_argument("--out", required=True, help="sidecar file (.csv or .npz; .npz for .rec)")
    _add_detector_options(p, None)
    p.add_argument(
        "--template", action="store_true", help="write the ArcFace template for every image"
    )
    p.add_argument(
        "--points", choices=("5", "68", "native"), default="5", help="points written per image"
    )
    p.add_argument(
        "--fallback",
        choices=("template", "error"),
        default="template",
        help="what an image without a detected face gets",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_landmarks)


def _run_landmarks(args: argparse.Namespace) -> int:
    import json

    from lafslib.landmarks.annotate import annotate_dataset
    from lafslib.landmarks.detectors import create_detector

    if args.template == bool(args.detector):
        raise ValueError("choose one landmark source: --detector NAME or --template")
    detector = None if args.template else create_detector(args.detector, **_detector_kwargs(args))
    report = annotate_dataset(
        args.data,
        args.out,
        detector,
        points=args.points,
        fallback=args.fallback,
        progress=_tqdm(args.quiet, "landmarks"),
    )
    summary = report.to_dict()
    summary["fallback_count"] = len(report.fallback)
    print(json.dumps(summary, indent=2))
    return 0


def _add_show_landmarks(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "show-landmarks",
        "Draw faces with their landmarks and landmark indices into one PNG, from the sidecar "
        "beside the images, a given sidecar, or a detector.",
        """
  lafs show-landmarks ../shared/data/celeba-112/images/07201/*.jpg --out grid.png
  lafs show-landmarks photo.jpg --detector dlib --out photo_landmarks.png
""",
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", default="landmarks.png", help="output PNG")
    p.add_argument(
        "--landmarks",
        default="auto",
        help="sidecar file (auto: the one beside the images' dataset)",
    )
    _add_detector_options(p, None)
    p.add_argument(
        "--scale", type=float, default=None, help="resize factor per face (default: 336 px tiles)"
    )
    p.add_argument("--no-indices", action="store_true", help="do not number the points")
    p.set_defaults(func=_run_show_landmarks)


def _sidecar_points(table: Any, image_path: Any) -> Any:
    """The points of ``image_path`` in a landmark table keyed by paths relative to any parent."""
    for parent in image_path.parents:
        key = image_path.relative_to(parent).as_posix()
        if key in table:
            return table[key]
    return None


def _run_show_landmarks(args: argparse.Namespace) -> int:
    from pathlib import Path

    from PIL import Image

    from lafslib.data.folder import find_sidecar
    from lafslib.data.images import read_image
    from lafslib.landmarks.detectors import create_detector
    from lafslib.landmarks.store import load_landmarks
    from lafslib.viz import landmarks_grid

    detector = create_detector(args.detector, **_detector_kwargs(args)) if args.detector else None
    images, points, tables = [], [], {}
    found = 0
    for name in args.images:
        path = Path(name).resolve()
        image = read_image(path)
        pts = None
        if detector is not None:
            faces = detector.detect(image, path.name)
            pts = max(faces, key=lambda f: f.area).landmarks if faces else None
        else:
            sidecar = (
                find_sidecar(path.parent.parent)
                if args.landmarks == "auto"
                else Path(args.landmarks)
            )
            if sidecar is not None:
                if sidecar not in tables:
                    tables[sidecar] = load_landmarks(sidecar)
                pts = _sidecar_points(tables[sidecar], path)
        found += pts is not None
        images.append(image)
        points.append(pts)
    grid = landmarks_grid(images, points, args.scale, indices=not args.no_indices)
    Image.fromarray(grid).save(args.out)
    print(f"{len(images)} faces, {found} with landmarks -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- models


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "models",
        "List the registered backbones (glob PATTERN); with --details build each on CPU and "
        "print parameters, embedding size, input size and whether it needs keypoints.",
        """
  lafs models
  lafs models "*kprpe*" --details
""",
    )
    p.add_argument("pattern", nargs="?", default="*", help="glob over model names")
    p.add_argument("--details", action="store_true", help="build each model and describe it")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from lafslib.models import create_model, list_models
    from lafslib.models._registry import model_info

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}")
    if not args.details:
        print("\n".join(names))
        return 0
    print(f"{'name':<28} {'params (M)':>10} {'embed':>6} {'input':>12}  keypoints")
    for name in names:
        model = create_model(name)
        info = model_info(model)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        size = "x".join(str(v) for v in info.input_size)
        keypoints = f"{info.num_keypoints}" if info.needs_keypoints else "-"
        print(f"{name:<28} {params:>10.2f} {info.embed_dim:>6} {size:>12}  {keypoints}")
    return 0


# ----------------------------------------------------------------------------- show-attention


def _add_show_attention(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "show-attention",
        "Draw the attention of every head of an exported ViT over one face (rows: layers; "
        "CLS-to-patch attention, or attention received without CLS; landmark-patch tokens "
        "drawn at their landmarks).",
        """
  lafs show-attention runs/cpu_small/export ../shared/data/celeba-112/images/07201/001085.jpg
  lafs show-attention runs/kprpe/export face.jpg --layers 0 5 11 --out attention.png
""",
    )
    p.add_argument("model", help="export folder (lafs export / finetune)")
    p.add_argument("image", help="an aligned face image")
    p.add_argument("--out", default="attention.png", help="output PNG")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="layer indices (all)")
    p.add_argument(
        "--landmarks",
        default="auto",
        help="keypoints for KP-RPE models: sidecar file (auto: beside the image's dataset; "
        "none: the template)",
    )
    p.set_defaults(func=_run_show_attention)


def _run_show_attention(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from lafslib.data.folder import find_sidecar
    from lafslib.data.images import read_image
    from lafslib.landmarks.store import load_landmarks
    from lafslib.landmarks.template import landmarks68_to_5, template_for_size
    from lafslib.models import load_export
    from lafslib.viz.attention import plot_attention

    model = load_export(args.model)
    size = model.pretrained_cfg.input_size[-1]
    path = Path(args.image).resolve()
    image = read_image(path)
    scale = size / image.shape[0]
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    keypoints = None
    if model.pretrained_cfg.needs_keypoints:
        sidecar = find_sidecar(path.parent.parent) if args.landmarks == "auto" else None
        if args.landmarks not in ("auto", "none"):
            sidecar = Path(args.landmarks)
        pts = _sidecar_points(load_landmarks(sidecar), path) if sidecar else None
        if pts is not None and len(pts) == 68:
            pts = landmarks68_to_5(pts)
        keypoints = template_for_size(size) if pts is None else np.asarray(pts) * scale
    out = plot_attention(model, image, args.out, keypoints, args.layers)
    print(f"attention of {type(model).__name__} ({args.model}) -> {out}")
    return 0


# ----------------------------------------------------------------------------- registry

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_show_config,
    _add_data,
    _add_pretrain,
    _add_export,
    _add_convert,
    _add_eval,
    _add_finetune,
    _add_show_views,
    _add_align,
    _add_landmarks,
    _add_show_landmarks,
    _add_models,
    _add_show_attention,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``lafs`` argument parser with every subcommand."""
    from lafslib import __version__

    parser = argparse.ArgumentParser(
        prog="lafs",
        description="lafslib: landmark-aware self-supervised face representation learning.",
        epilog="Run 'lafs COMMAND --help' for the options and examples of each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lafslib {__version__}")
    _add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


# What a user can cause: the lafslib hierarchy, plus the built-in errors of paths and values that
# library code raises for bad inputs. Everything else is a bug and keeps its traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lafs`` console script.

    A user error (:class:`lafslib.errors.LafsUserError` and the path and value errors above)
    exits with code 2 and one line on stderr naming the file or key; ``--debug`` or
    ``LAFS_DEBUG=1`` prints the traceback first.
    """
    from lafslib.errors import ConfigError, LafsUserError, user_message

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False) or os.environ.get("LAFS_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except (LafsUserError, *_USER_ERRORS) as exc:
        if debug:
            traceback.print_exc()
        kind = "invalid recipe" if isinstance(exc, ConfigError) else "error"
        print(f"lafs {args.command}: {kind}: {user_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
