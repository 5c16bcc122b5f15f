"""Pretraining set-up from a recipe: the view generator, learned landmarks, frozen parameters,
and the checks that make a recipe fail before its first step rather than at an evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from lafslib.config import ConfigError, DataConfig, PretrainConfig, ViewsConfig
from lafslib.data import open_dataset, open_pool
from lafslib.engine.distributed import DistInfo
from lafslib.engine.logging import RunLogger
from lafslib.transforms import MultiCropViews

__all__ = [
    "build_views",
    "check_flatten_views",
    "check_whitening_folder",
    "freeze_parameters",
    "net_landmarks",
    "open_pretrain_data",
]


def net_landmarks(cfg: PretrainConfig, run_dir: Path, info: DistInfo, logger: RunLogger) -> Path:
    """``views.landmark_source: net``: the landmarks of a learned landmark CNN (the one of an
    exported Part fViT, e.g. LAFS stage 1) for every training image, predicted once on the
    aligned face into ``RUN/landmarks_net.npz`` and then moved with each view's crop and flip
    like any sidecar landmarks."""
    from lafslib.config import ConfigError
    from lafslib.data.annotate import annotate_dataset
    from lafslib.engine.distributed import barrier
    from lafslib.landmarks.detectors import LearnedLandmarkDetector

    v = cfg.views
    if not v.landmark_net:
        raise ConfigError(
            "views.landmark_source=net needs views.landmark_net: the export of a Part fViT "
            "whose landmark CNN predicts the landmarks (recipes/finetune/partfvit_stage1_*.yaml)"
        )
    out = run_dir / "landmarks_net.npz"
    if info.is_main and not out.is_file():
        detector = LearnedLandmarkDetector(v.landmark_net, device=str(info.device))
        if detector.num_points != v.num_landmarks:
            raise ConfigError(
                f"views.num_landmarks is {v.num_landmarks} but the landmark CNN of "
                f"{v.landmark_net} predicts {detector.num_points} landmarks"
            )
        logger.print(f"predicting {detector.num_points} landmarks per image with {v.landmark_net}")
        annotate_dataset(cfg.data.train, out, detector, points="native")
    barrier()
    return out


def open_pretrain_data(
    d: DataConfig, landmarks: str | Path | None, transform: Any, seed: int
) -> Dataset:
    """The training images of ``data``: one source, or a list of sources as one pool (each
    with its own sidecar), all opened (and checked) before training starts."""
    if isinstance(d.train, list):
        sidecars = d.landmarks if isinstance(d.landmarks, list) else None
        return open_pool(d.train, sidecars, transform)
    return open_dataset(
        d.train,
        labelled=False,
        landmarks=landmarks,
        transform=transform,
        synthetic_identities=d.synthetic_identities,
        synthetic_per_identity=d.synthetic_per_identity,
        synthetic_size=d.synthetic_size,
        seed=seed,
    )


def build_views(v: ViewsConfig) -> Any:
    """The view generator described by a recipe's ``views`` section."""
    if v.kind == "multicrop":
        return MultiCropViews(
            global_views=v.global_views,
            local_views=v.local_views,
            image_size=v.image_size,
            local_size=v.local_size,
            global_scale=v.global_scale,
            local_scale=v.local_scale,
            patch_size=v.patch_size,
            colour_strength=v.colour_strength,
            relight_strength=v.relight_strength,
        )
    from lafslib.transforms import LAFSViews

    return LAFSViews(
        global_views=v.global_views,
        local_views=v.local_views,
        num_landmarks=v.num_landmarks,
        local_landmarks=v.local_landmarks,
        patch_size=v.patch_size,
        sigma=v.sigma,
        image_size=v.image_size,
        global_scale=v.global_scale,
        landmark_source="sidecar" if v.landmark_source == "net" else v.landmark_source,
        grid_method=v.landmark_grid,
        colour_strength=v.colour_strength,
        local_layout=v.local_layout,
        relight_strength=v.relight_strength,
    )


def freeze_parameters(backbone: nn.Module, prefixes: list[str]) -> int:
    """Stop training the backbone parameters named by ``prefixes`` (a name, or a prefix that
    ends at a module boundary: ``patch_embed`` freezes ``patch_embed.weight`` and ``.bias``);
    the teacher, their EMA, keeps them too. Returns how many numbers are frozen.

    Raises:
        ConfigError: a prefix names no parameter (``optim.frozen`` and the value).
    """
    names = dict(backbone.named_parameters())
    total = 0
    for prefix in prefixes:
        matched = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not matched:
            modules = sorted({n.split(".")[0] for n in names})
            raise ConfigError(
                f"optim.frozen: {prefix!r} names no parameter of {type(backbone).__name__} "
                f"(its top-level modules: {', '.join(modules)})"
            )
        for n in matched:
            if names[n].requires_grad:
                names[n].requires_grad_(False)
                total += names[n].numel()
    return total


def check_whitening_folder(cfg: PretrainConfig, feature_dim: int) -> None:
    """``eval.whiten`` exists and holds enough faces to whiten ``feature_dim`` features: a
    recipe that would fail at its first evaluation fails before the first step."""
    from lafslib.errors import InputNotFoundError
    from lafslib.io import list_images

    e = cfg.eval
    if not e.whiten or not (e.every and e.bins):
        return
    if not Path(e.whiten).is_dir():
        raise InputNotFoundError(f"eval.whiten: folder not found: {e.whiten}")
    n = min(len(list_images(e.whiten)), e.whiten_images)
    if e.whiten_shrink == 0 and n <= feature_dim:
        raise ConfigError(
            f"eval.whiten: {n} faces cannot whiten the {feature_dim}-dimensional SSL feature "
            f"without shrinkage: raise eval.whiten_images, use a larger folder or set "
            f"eval.whiten_shrink > 0"
        )


def check_flatten_views(cfg: PretrainConfig, backbone: nn.Module) -> None:
    """A backbone whose SSL feature flattens the token grid needs every view's full grid.

    Raises:
        ConfigError: ``model.kwargs.ssl_pool: flatten`` with local views that drop tokens.
    """
    v = cfg.views
    grid_locals = v.kind == "lafs" and v.local_layout == "grid"
    if getattr(backbone, "flatten_pool", None) is not None and v.local_views and not grid_locals:
        raise ConfigError(
            "model.kwargs.ssl_pool: flatten needs the full token grid in every view, but "
            f"views.local_views is {v.local_views} with "
            + ("multicrop views" if v.kind == "multicrop" else "views.local_layout: mosaic")
            + ": set views.local_views: 0, or views.kind: lafs with views.local_layout: grid"
        )
