"""``lafs export``: the teacher (pretraining) or trained (finetuning) backbone of a run.

A pretraining export embeds with the teacher's self-supervised feature (``"feature": "ssl"`` in
``model.json``), the one DINO trains; a finetuning export with the trained embedding head.

Writes ``model.safetensors`` + ``model.json`` (what ``lafs finetune --init`` and ``lafs eval``
load) and, with ``onnx=True``, ``model.onnx`` (:func:`export_onnx`), all moved into place
together, replacing a previous export as a whole (its ``model.onnx`` too); every registered family
(face ViT, ViT + KP-RPE, CVLFace ViT +- KP-RPE, Part fViT, IResNet, timm ViT) exports with
``torch.onnx.export(dynamo=True)`` and a dynamic batch axis. Inputs: ``images`` (B, 3, H, W)
and, for models that need keypoints (KP-RPE), ``keypoints`` (B, K, 2) as (x, y) in [0, 1];
output ``embeddings`` (B, D). ``model.json`` records them under ``onnx``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lafslib.config import config_from_dict
from lafslib.engine.checkpoint import latest_checkpoint, load_checkpoint
from lafslib.models import create_model, model_info, save_export
from lafslib.models.export import check_export_target
from lafslib.models.ssl_features import SSLFeatures

__all__ = ["export_run", "export_onnx", "onnx_signature", "add_onnx"]

_ONNX_SINGLE_FILE_LIMIT = 2**31 - 2**26  # protobuf's 2 GiB, with room for the graph


def _backbone_state(state: dict, task: str) -> dict[str, torch.Tensor]:
    if task == "pretrain":
        source, prefix = state["teacher"], "backbone."
    else:
        source, prefix = state["model"], "backbone."
    return {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}


def export_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    onnx: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export the backbone of a run's latest checkpoint (or of the checkpoint file given).

    Args:
        overwrite: replace an export already in the output folder (else an ``ExportError``
            before any work).

    Returns:
        The export folder (default ``RUN/export``).
    """
    run = Path(run)
    out_dir = Path(out) if out else (run if run.is_dir() else run.parent.parent) / "export"
    check_export_target(out_dir, overwrite)
    ckpt = run if run.is_file() else latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint under {run / 'checkpoints'}")
    state = load_checkpoint(ckpt)
    cfg = config_from_dict(state["config"], str(ckpt))
    model = create_model(cfg.model.name, **cfg.model.kwargs)
    lora = cfg.task == "finetune" and cfg.adapter.mode in ("lora", "rslora")
    if lora:  # the checkpoint holds the unmerged LoRA factors
        from lafslib.engine.finetune import _apply_adapter

        _apply_adapter(model, cfg)
    missing, unexpected = model.load_state_dict(_backbone_state(state, cfg.task), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{ckpt}: backbone keys mismatch: missing {missing}, unexpected {unexpected}"
        )
    if lora:
        from lafslib.layers.lora import merge_lora

        model = merge_lora(model)  # a plain backbone: W + scale * B @ A
    feature = "ssl" if cfg.task == "pretrain" else "head"
    embedder = SSLFeatures(model.eval()) if feature == "ssl" else model.eval()
    extra: dict[str, Any] = {"step": int(state["step"]), "source": str(ckpt)}
    if not onnx:  # a previous export's model.onnx goes: it belongs to other weights
        save_export(model.eval(), out_dir, feature=feature, **extra)
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / f".onnx-{os.getpid()}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        export_onnx(embedder, stage / "model.onnx")
        extra["onnx"] = {"file": "model.onnx", **onnx_signature(embedder)}
        staged = {f.name: f for f in stage.iterdir() if f.is_file()}
        save_export(model.eval(), out_dir, feature=feature, staged=staged, **extra)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out_dir


def onnx_signature(model: nn.Module) -> dict[str, dict[str, list[int | str]]]:
    """Names and shapes (``"batch"``: the dynamic axis) of the ONNX inputs and output."""
    info = model_info(model)
    inputs: dict[str, list[int | str]] = {"images": ["batch", *info.input_size]}
    if info.needs_keypoints:
        inputs["keypoints"] = ["batch", info.num_keypoints, 2]
    return {"inputs": inputs, "outputs": {"embeddings": ["batch", info.embed_dim]}}


def _onnx_example(model: nn.Module, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Random inputs in the ONNX order: images in [-1, 1] and, if needed, keypoints in [0, 1]."""
    info = model_info(model)
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, *info.input_size, generator=g) * 2 - 1
    if not info.needs_keypoints:
        return (images,)
    return images, torch.rand(batch, info.num_keypoints, 2, generator=g)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    atol: float = 1e-4,
    rtol: float = 1e-3,
    batch_size: int = 2,
    check_batch_size: int = 3,
) -> Path:
    """Write ``model`` (moved to the CPU, eval mode) as ONNX and check it against PyTorch.

    The graph is traced by ``torch.onnx.export(dynamo=True)`` at ``batch_size`` with a dynamic
    batch axis (:func:`onnx_signature` gives the names), then run by onnxruntime on other random
    inputs (random keypoints too) of ``check_batch_size``. The file appears only when the
    outputs agree. Models over 2 GiB get their weights in ``<name>.data`` beside it.

    Raises:
        ImportError: onnx, onnxscript or onnxruntime missing (the ``onnx`` extra).
        ValueError: ONNX Runtime's outputs differ from PyTorch's.
    """
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (the dynamo exporter's translator)
    except ImportError:
        raise ImportError("ONNX export needs the onnx extra: pip install 'lafslib[onnx]'") from None
    model = model.eval().cpu()
    path = Path(path)
    signature = onnx_signature(model)
    names = list(signature["inputs"])
    check = _onnx_example(model, check_batch_size, seed=1)
    with torch.no_grad():  # also fills the models' caches (KP-RPE bucket indices) with constants
        expected = model(*check).numpy()
    batch = torch.export.Dim("batch")
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    try:
        with warnings.catch_warnings():  # both inputs share the one batch dimension
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            torch.onnx.export(
                model,
                _onnx_example(model, batch_size, seed=0),
                str(tmp / path.name),
                input_names=names,
                output_names=list(signature["outputs"]),
                dynamic_shapes=tuple({0: batch} for _ in names),
                dynamo=True,
                external_data=size > _ONNX_SINGLE_FILE_LIMIT,
                verbose=False,
            )
        session = ort.InferenceSession(str(tmp / path.name), providers=["CPUExecutionProvider"])
        got = session.run(None, {n: t.numpy() for n, t in zip(names, check)})[0]
        if got.shape != expected.shape:
            raise ValueError(f"{path}: ONNX output {got.shape}, PyTorch {expected.shape}")
        if not np.allclose(got, expected, atol=atol, rtol=rtol):
            raise ValueError(
                f"{path}: ONNX outputs differ from PyTorch (max abs diff "
                f"{np.abs(got - expected).max():.2e})"
            )
        for f in tmp.iterdir():
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def add_onnx(export: str | os.PathLike[str]) -> Path:
    """Write ``model.onnx`` beside an export folder's weights (e.g. one of ``lafs convert``) and
    record it in its ``model.json``; the graph takes the export's input, RGB in [-1, 1]."""
    from lafslib.models import load_export
    from lafslib.models.export import read_export_info

    folder = Path(export)
    model = load_export(folder)
    path = export_onnx(model, folder / "model.onnx")
    info = read_export_info(folder)
    info["onnx"] = {"file": path.name, **onnx_signature(model)}
    tmp = folder / "model.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, folder / "model.json")
    return path
