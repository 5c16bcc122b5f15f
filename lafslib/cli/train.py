"""``lafs pretrain``, ``lafs finetune``, ``lafs export`` and ``lafs convert``: making backbones."""

from __future__ import annotations

import argparse

from lafslib.cli.common import add_overrides, add_run_dir_options, command

__all__ = ["add_pretrain", "add_finetune", "add_export", "add_convert", "CONVERT_FORMATS"]


# ----------------------------------------------------------------------------- pretrain


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "pretrain",
        "Self-supervised DINO / LAFS pretraining from a recipe (one process or under torchrun).",
        """
  lafs pretrain recipes/demo/pretrain_demo.yaml
  lafs pretrain recipes/pretrain/cpu_small.yaml --set optim.epochs=2 --resume auto
  lafs pretrain RECIPE --resume auto --set optim.lr=2e-4 --allow-change optim.lr
  torchrun --nproc_per_node 8 -m lafslib.cli pretrain recipes/pretrain/lafs_fvit_base_webface4m.yaml
""",
    )
    p.add_argument("recipe", help="YAML recipe with task: pretrain")
    add_overrides(p)
    add_run_dir_options(p)
    _add_allow_change(p)
    p.set_defaults(func=_run_pretrain)


def _add_allow_change(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="KEY",
        help="with --resume: accept a change of this recipe key (or section, or glob) that "
        "changes what the run trains, e.g. --allow-change optim.lr (repeatable); recorded with "
        "its step in RUN/config_changes.jsonl; without it such a change is refused",
    )


def _run_pretrain(args: argparse.Namespace) -> int:
    from lafslib.config import ConfigError, load_recipe

    cfg = load_recipe(args.recipe, args.overrides)  # before the training stack is imported
    if cfg.task != "pretrain":
        raise ConfigError(f"{args.recipe}: 'lafs pretrain' needs task: pretrain, got {cfg.task}")
    from lafslib.engine.pretrain import pretrain

    run_dir = pretrain(
        cfg, resume=args.resume, overwrite=args.overwrite, allow_change=args.allow_change
    )
    print(f"run directory: {run_dir}")
    return 0


# ----------------------------------------------------------------------------- finetune


def add_finetune(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    add_overrides(p)
    add_run_dir_options(p)
    _add_allow_change(p)
    p.set_defaults(func=_run_finetune)


def _run_finetune(args: argparse.Namespace) -> int:
    from lafslib.config import ConfigError, load_recipe

    overrides = list(args.overrides) + ([f"init={args.init}"] if args.init else [])
    cfg = load_recipe(args.recipe, overrides)  # before the training stack is imported
    if cfg.task != "finetune":
        raise ConfigError(f"{args.recipe}: 'lafs finetune' needs task: finetune, got {cfg.task}")
    from lafslib.engine.finetune import finetune

    run_dir = finetune(
        cfg, resume=args.resume, overwrite=args.overwrite, allow_change=args.allow_change
    )
    print(f"run directory: {run_dir}")
    return 0


# ----------------------------------------------------------------------------- export

OVERWRITE_HELP = "replace an export already in the output folder (else refused, nothing written)"


def add_export(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from lafslib.engine.export import export_run

    print(f"exported to {export_run(args.run, args.out, args.onnx, args.overwrite)}")
    return 0


# ----------------------------------------------------------------------------- convert


CONVERT_FORMATS = (
    "insightface",
    "mobilefacenet",
    "adaface",
    "cvlface",
    "lafs",
    "partfvit",
    "dino",
    "timm",
    "dinov2",
)


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "convert",
        "Convert a checkpoint of a reference project (insightface/arcface_torch, MobileFaceNet, "
        "AdaFace, CVLFace, LAFS, Part fViT, DINO, timm/DINOv2/CLIP) into a lafslib export "
        "folder that takes RGB in [-1, 1]. Every key is loaded, reported as skipped (e.g. a "
        "margin-loss classifier) or reported as an error; the source's input convention (BGR, "
        "mean/std) is applied inside the export and recorded in its model.json.",
        """
  lafs convert mobilefacenet.pt exports/mfn            (format detected: mobilefacenet)
  lafs convert adaface_ir50_ms1mv2.ckpt exports/ada50  (format detected: adaface, BGR folded)
  lafs convert checkpoint_gpu_0.pt exports/r50 --format insightface
  lafs convert backbone.pth exports/ir50 --format insightface
  lafs convert cvlface_ir101/model.pt exports/cvl_ir101 --format cvlface
  lafs convert hf://minchul/cvlface_adaface_ir101_webface12m exports/ada101 --onnx
  lafs convert lafs/checkpoint.pth exports/lafs --format lafs --allow-missing 'head.*'
  lafs convert part_fvit.pth exports/part_fvit --format partfvit --allow-missing 'vit.head.*'
  lafs convert dinov2_vits14.pth exports/dinov2_s --format dinov2 --model vit_small_patch14_dinov2
""",
    )
    p.add_argument(
        "src",
        help="checkpoint file (.pth/.pt/.safetensors), a folder with one, or a published model "
        "hf://owner/repo[@revision] (CVLFace's Hub layout, through huggingface_hub's cache)",
    )
    p.add_argument("out", help="output export folder (model.safetensors + model.json)")
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", *CONVERT_FORMATS),
        dest="fmt",
        help="source layout (auto: detected from the keys where unambiguous)",
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
        "--onnx",
        action="store_true",
        help="also write model.onnx (input convention included; needs [onnx])",
    )
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    colour = p.add_mutually_exclusive_group()
    colour.add_argument(
        "--bgr",
        action="store_true",
        default=None,
        help="the weights expect BGR input, whatever the format's default (folded into the first "
        "conv; defaults: adaface BGR, cvlface from model.yaml, others RGB)",
    )
    colour.add_argument(
        "--rgb",
        action="store_false",
        dest="bgr",
        help="the weights expect RGB input, whatever the format's default",
    )
    p.add_argument(
        "--input-mean",
        type=float,
        nargs=3,
        default=None,
        metavar=("R", "G", "B"),
        help="mean of RGB in [0, 1] the weights expect, overriding the format's (mobilefacenet: "
        "ImageNet's; others 0.5); applied inside models that support it",
    )
    p.add_argument(
        "--input-std",
        type=float,
        nargs=3,
        default=None,
        metavar=("R", "G", "B"),
        help="std of RGB in [0, 1] the weights expect, overriding the format's",
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
        overwrite=args.overwrite,
        model_name=args.model,
        model_kwargs=model_kwargs,
        allow_missing=args.allow_missing,
        branch=args.branch,
        img_size=args.img_size,
        bgr=args.bgr,
        input_mean=args.input_mean,
        input_std=args.input_std,
    )
    print(report.summary())
    if args.onnx:
        from lafslib.engine.export import add_onnx

        print(f"wrote {add_onnx(out)}")
    print(f"exported to {out}")
    return 0
