"""``convert_checkpoint`` / ``convert_to_export``: plan by family, build, load, report."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from lafslib.errors import ModelArgumentError
from lafslib.models._registry import create_model
from lafslib.models.convert._common import (
    STANDARD_MEAN,
    STANDARD_STD,
    ConversionError,
    ConversionReport,
    Plan,
    Request,
    read_checkpoint,
    unwrap,
)
from lafslib.models.convert.adaface import plan_adaface, plan_cvlface
from lafslib.models.convert.detect import candidate_formats, detect_format
from lafslib.models.convert.dino import dino_head_from_state, dino_head_kwargs, plan_dino
from lafslib.models.convert.hub import hub_checkpoint, is_hf_source
from lafslib.models.convert.insightface import plan_insightface
from lafslib.models.convert.lafs import plan_lafs, plan_partfvit
from lafslib.models.convert.mobilefacenet import plan_mobilefacenet
from lafslib.models.convert.timm_vit import plan_timm
from lafslib.models.export import check_export_target, save_export
from lafslib.models.heads import DINOHead

__all__ = ["FORMATS", "convert_checkpoint", "convert_to_export"]

FORMATS = (
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

_FIRST_CONVS = (
    "conv1.weight",
    "conv1.0.weight",
    "layers.0.layers.0.weight",
    "patch_embed.proj.weight",
    "patch_embed.weight",
)


def _plan(obj: Mapping[str, Any], fmt: str, req: Request, src: Path) -> Plan:
    if fmt == "lafs":
        return plan_lafs(obj, req)
    if fmt == "partfvit":
        return plan_partfvit(obj, req)
    if fmt == "dino":
        return plan_dino(obj, req)
    if fmt == "adaface":
        return plan_adaface(obj, req)
    if fmt == "mobilefacenet":
        return plan_mobilefacenet(obj, req)
    state = unwrap(obj, None, req.skipped)
    if fmt == "insightface":
        return plan_insightface(state, req)
    if fmt == "cvlface":
        return plan_cvlface(state, req, src)
    return plan_timm(state, req, fmt)


def _fold_bgr(plan: Plan) -> str:
    """Fold a BGR->RGB channel flip of the input into the first convolution (exact)."""
    for key in _FIRST_CONVS:
        w = plan.state.get(key)
        if w is not None and w.ndim == 4 and w.shape[1] == 3:
            plan.state[key] = w.flip(1).contiguous()
            return f"input: BGR folded into {key} (the export takes RGB)"
    raise ConversionError(f"cannot fold BGR input: none of {_FIRST_CONVS} has 3 input channels")


def _input_convention(
    plan: Plan,
    fmt: str,
    bgr: bool | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    notes: list[str],
) -> dict[str, Any]:
    """Apply the source's input convention (or the caller's override) to ``plan``."""
    chosen_bgr = plan.bgr if bgr is None else bool(bgr)
    chosen_mean = tuple(float(v) for v in (plan.mean if mean is None else mean))
    chosen_std = tuple(float(v) for v in (plan.std if std is None else std))
    if chosen_bgr != plan.bgr:
        notes.append(
            f"input: {'BGR' if chosen_bgr else 'RGB'} as asked overrides the {fmt} default "
            f"({'BGR' if plan.bgr else 'RGB'})"
        )
    if (chosen_mean, chosen_std) != (tuple(plan.mean), tuple(plan.std)):
        notes.append(
            f"input: mean {list(chosen_mean)} / std {list(chosen_std)} as asked override the "
            f"{fmt} default ({list(plan.mean)} / {list(plan.std)})"
        )
    applied = []
    if chosen_bgr:
        notes.append(_fold_bgr(plan))
        applied.append("BGR folded into the first convolution")
    if (chosen_mean, chosen_std) != (STANDARD_MEAN, STANDARD_STD):
        plan.kwargs.update(input_mean=list(chosen_mean), input_std=list(chosen_std))
        notes.append("input: mean/std applied inside the model (input_mean/input_std)")
        applied.append("mean/std renormalised inside the model")
    return {
        "color_space": "BGR" if chosen_bgr else "RGB",
        "range": [0, 1],
        "mean": list(chosen_mean),
        "std": list(chosen_std),
        "export_takes": "RGB in [-1, 1] (mean 0.5, std 0.5)",
        "applied": applied,
    }


def _build(plan: Plan, model_name: str | None, model_kwargs: Mapping[str, Any] | None) -> tuple:
    # Inferred geometry applies when the target is inferred too; a named target keeps its
    # registered defaults (plus model_kwargs), so a mismatching checkpoint is reported.
    inferred = model_name is None or plan.model == "timm_vit"
    kwargs = dict(plan.kwargs) if inferred else {}
    if not inferred:
        kwargs.update({k: plan.kwargs[k] for k in ("input_mean", "input_std") if k in plan.kwargs})
    for key, value in (model_kwargs or {}).items():
        if key == "vit_kwargs" and isinstance(value, Mapping):
            kwargs["vit_kwargs"] = {**kwargs.get("vit_kwargs", {}), **value}
        else:
            kwargs[key] = value
    try:
        return create_model(plan.model, **kwargs), kwargs
    except (TypeError, ModelArgumentError) as exc:
        raise ConversionError(
            f"cannot build '{plan.model}' with {kwargs}: {exc}; pass --model / --model-arg"
        ) from None


def _match(report: ConversionReport, plan: Plan, model: nn.Module, allow: Iterable[str]) -> None:
    target = model.state_dict()
    patterns = list(allow)
    for key in sorted(set(target) - set(plan.state)):
        if any(fnmatch.fnmatch(key, p) for p in patterns):
            report.allowed_missing.append(key)
        else:
            report.missing.append(key)
    report.unexpected = sorted(set(plan.state) - set(target))
    for key in sorted(set(plan.state) & set(target)):
        if plan.state[key].shape != target[key].shape:
            report.mismatched.append(
                f"{key}: checkpoint {tuple(plan.state[key].shape)} vs model "
                f"{tuple(target[key].shape)}"
            )
        else:
            report.loaded.append(key)


def convert_checkpoint(
    src: str | os.PathLike[str],
    fmt: str | None = None,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    allow_missing: Iterable[str] = (),
    branch: str = "teacher",
    img_size: int | None = None,
    bgr: bool | None = None,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
    strict: bool = True,
) -> tuple[nn.Module, ConversionReport, DINOHead | None]:
    """Load a reference checkpoint into a lafslib model that takes RGB in [-1, 1].

    Args:
        src: checkpoint file (or a folder with ``model.safetensors`` / ``model.pt``), or a
            published model ``hf://owner/repo[@revision]`` (CVLFace's Hub layout, read through
            huggingface_hub's cache: :mod:`lafslib.models.convert.hub`); the Hub's colour space
            and CVLFace ViT name are the defaults there.
        fmt: one of :data:`FORMATS`; ``None`` or ``"auto"``: detected from the keys.
        model_name: registry name of the target (timm name for ``timm``/``dinov2``). When
            omitted, the target and its geometry (IResNet depth and widths, fViT / DINO ViT
            size, MobileFaceNet variant) are inferred from the keys; when given, its
            registered defaults are used.
        model_kwargs: factory keyword arguments overriding the inferred ones.
        allow_missing: glob patterns of target keys that may stay at their initial values.
        branch: ``"teacher"`` or ``"student"`` for DINO/LAFS training checkpoints.
        img_size: input size of ``timm``/``dinov2`` models (position embeddings are resampled).
        bgr: the weights expect BGR input (folded exactly into the first convolution). ``None``:
            the format's convention (AdaFace: BGR; CVLFace: its ``model.yaml``; others RGB).
        input_mean: mean of RGB in [0, 1] the weights expect (``None``: the format's; e.g.
            ImageNet's for MobileFaceNet); applied inside models that support it.
        input_std: the matching std.
        strict: raise :class:`ConversionError` unless every key is accounted for.

    Returns:
        (model in eval mode, report, DINO head if the checkpoint has one). ``report.input``
        records the source's input convention and how it was applied.
    """
    hub = None
    if is_hf_source(src):
        hub = hub_checkpoint(str(src))
        src = hub.weights
        fmt = hub.format if fmt in (None, "auto") else fmt
        model_name = model_name or hub.model_name
    obj = read_checkpoint(src)
    if fmt in (None, "auto"):
        fmt = detect_format(obj, str(src))
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    timm_kwargs = (model_kwargs or {}).get("timm_kwargs")
    req = Request(model_name, branch, img_size, timm_kwargs)
    plan = _plan(obj, fmt, req, Path(src))
    if hub is not None:  # the Hub's configs, not a model.yaml beside the weights
        plan.bgr = hub.bgr
    notes: list[str] = []
    convention = _input_convention(plan, fmt, bgr, input_mean, input_std, notes)
    model, kwargs = _build(plan, model_name, model_kwargs)
    report = ConversionReport(
        hub.snapshot.pinned if hub else str(src),
        fmt,
        plan.model,
        kwargs,
        skipped=req.skipped,
        notes=(hub.notes if hub else []) + notes,
        input=convention,
        hub=hub.record() if hub else {},
    )
    _match(report, plan, model, allow_missing)
    if strict and not report.ok:
        others = [f for f in candidate_formats(obj) if f != fmt]
        hint = f"; the keys also fit --format {' / '.join(others)}" if others else ""
        raise ConversionError(
            f"{report.source} ({fmt}) does not fit '{plan.model}': {report.problems()} (name "
            "untrained "
            "keys with --allow-missing PATTERN, or choose the target with --model / --model-arg"
            f"{hint})"
        )
    model.load_state_dict({k: plan.state[k] for k in report.loaded}, strict=False)
    head = dino_head_from_state(plan.head) if plan.head else None
    return model.eval(), report, head


def convert_to_export(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    fmt: str | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> tuple[Path, ConversionReport]:
    """Convert ``src`` and write an export folder (``model.safetensors`` + ``model.json``).

    ``model.json`` records under ``converted_from`` the source, its format, its input
    convention and how the export applies it, and every key left out with the reason. A DINO
    head found in the checkpoint is written beside it as ``dino_head.safetensors`` +
    ``dino_head.json`` (read back with :func:`~lafslib.models.convert.load_dino_head`). An
    export already in ``out_dir`` is an ``ExportError`` before any work, unless ``overwrite``.
    """
    check_export_target(out_dir, overwrite)
    model, report, head = convert_checkpoint(src, fmt, **kwargs)
    extra: dict[str, Any] = {
        "converted_from": {
            "source": report.source,
            **({"hub": report.hub} if report.hub else {}),
            "format": report.format,
            "input": report.input,
            "skipped": report.skipped,
        }
    }
    out = save_export(model, out_dir, **extra)
    if head is not None:
        state = {k: v.contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(Path(out) / "dino_head.safetensors"))
        (Path(out) / "dino_head.json").write_text(
            json.dumps(dino_head_kwargs(head), indent=2) + "\n"
        )
    return out, report
