"""``lafs show-*`` and ``lafs models``: printing recipes and models, drawing views, landmarks and attention."""

from __future__ import annotations

import argparse

from lafslib.cli.common import add_overrides, command, sidecar_points
from lafslib.cli.data import add_detector_options, detector_kwargs

__all__ = [
    "add_show_config",
    "add_show_views",
    "add_show_landmarks",
    "add_show_attention",
    "add_models",
]


# ----------------------------------------------------------------------------- show-config


def add_show_config(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "show-config",
        "Print a recipe fully resolved (base: inheritance, --set overrides, defaults).",
        """
  lafs show-config recipes/pretrain/cpu_small.yaml
  lafs show-config recipes/pretrain/cpu_small.yaml --set optim.epochs=2 --set run.seed=1
""",
    )
    p.add_argument("recipe", help="YAML recipe file")
    add_overrides(p)
    p.set_defaults(func=_run_show_config)


def _run_show_config(args: argparse.Namespace) -> int:
    from lafslib.config import dump_config, load_recipe

    print(dump_config(load_recipe(args.recipe, args.overrides)), end="")
    return 0


# ----------------------------------------------------------------------------- show-views


def add_show_views(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    from lafslib.engine.pretrain import build_views
    from lafslib.io import read_image
    from lafslib.landmarks.store import load_landmarks
    from lafslib.viz import views_grid

    views_cfg = load_recipe(args.recipe).views if args.recipe else ViewsConfig()
    image_path = Path(args.image)
    sample = {"image": read_image(image_path), "label": -1}
    sidecar = find_sidecar(image_path.parent.parent) if args.landmarks == "auto" else None
    if args.landmarks not in ("auto", "none"):
        sidecar = Path(args.landmarks)
    if sidecar is not None:
        pts = sidecar_points(load_landmarks(sidecar), image_path)
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


def add_show_landmarks(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    add_detector_options(p, None)
    p.add_argument(
        "--scale", type=float, default=None, help="resize factor per face (default: 336 px tiles)"
    )
    p.add_argument("--no-indices", action="store_true", help="do not number the points")
    p.set_defaults(func=_run_show_landmarks)


def _run_show_landmarks(args: argparse.Namespace) -> int:
    from pathlib import Path

    from PIL import Image

    from lafslib.data.folder import find_sidecar
    from lafslib.io import read_image
    from lafslib.landmarks.detectors import create_detector
    from lafslib.landmarks.store import load_landmarks
    from lafslib.viz import landmarks_grid

    detector = create_detector(args.detector, **detector_kwargs(args)) if args.detector else None
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
                pts = sidecar_points(tables[sidecar], path)
        found += pts is not None
        images.append(image)
        points.append(pts)
    grid = landmarks_grid(images, points, args.scale, indices=not args.no_indices)
    Image.fromarray(grid).save(args.out)
    print(f"{len(images)} faces, {found} with landmarks -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- models


def add_models(sub: argparse._SubParsersAction) -> None:
    p = command(
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


def add_show_attention(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    from lafslib.io import read_image
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
        pts = sidecar_points(load_landmarks(sidecar), path) if sidecar else None
        if pts is not None and len(pts) == 68:
            pts = landmarks68_to_5(pts)
        keypoints = template_for_size(size) if pts is None else np.asarray(pts) * scale
    out = plot_attention(model, image, args.out, keypoints, args.layers)
    print(f"attention of {type(model).__name__} ({args.model}) -> {out}")
    return 0
