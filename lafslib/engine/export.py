"""``lafs export``: the teacher (pretraining) or trained (finetuning) backbone of a run.

A pretraining export embeds with the teacher's self-supervised feature (``"feature": "ssl"`` in
``model.json``), the one DINO trains; a finetuning export with the trained embedding head.

Writes ``model.safetensors`` + ``model.json`` (what ``lafs finetune --init`` and ``lafs eval``
load) and, with ``onnx=True``, ``model.onnx`` with a dynamic batch axis, checked against the
PyTorch outputs with onnxruntime.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lafslib.config import config_from_dict
from lafslib.engine.checkpoint import latest_checkpoint, load_checkpoint
from lafslib.models import create_model, save_export
from lafslib.models.ssl_features import SSLFeatures

__all__ = ["export_run", "export_onnx"]


def _backbone_state(state: dict, task: str) -> dict[str, torch.Tensor]:
    if task == "pretrain":
        source, prefix = state["teacher"], "backbone."
    else:
        source, prefix = state["model"], "backbone."
    return {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}


def export_run(
    run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, onnx: bool = False
) -> Path:
    """Export the backbone of a run's latest checkpoint (or of the checkpoint file given).

    Returns:
        The export folder (default ``RUN/export``).
    """
    run = Path(run)
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
    out_dir = Path(out) if out else (run if run.is_dir() else run.parent.parent) / "export"
    feature = "ssl" if cfg.task == "pretrain" else "head"
    save_export(model.eval(), out_dir, feature=feature, step=int(state["step"]), source=str(ckpt))
    if onnx:
        export_onnx(SSLFeatures(model) if feature == "ssl" else model, out_dir / "model.onnx")
    return out_dir


def export_onnx(model: nn.Module, path: str | os.PathLike[str], atol: float = 1e-4) -> Path:
    """Write an ONNX file with a dynamic batch axis and check it against PyTorch."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("ONNX export needs the onnx extra: pip install 'lafslib[onnx]'") from None
    model = model.eval().cpu()
    _, c, h, w = (1, *model.pretrained_cfg.input_size)
    example = torch.randn(2, c, h, w)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(
        model,
        (example,),
        str(tmp),
        input_names=["images"],
        output_names=["embeddings"],
        dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    check = torch.randn(3, c, h, w)
    with torch.no_grad():
        expected = model(check).numpy()
    got = session.run(None, {"images": check.numpy()})[0]
    if not np.allclose(got, expected, atol=atol, rtol=1e-3):
        tmp.unlink(missing_ok=True)
        raise ValueError(
            f"{path}: ONNX outputs differ from PyTorch (max abs diff "
            f"{np.abs(got - expected).max():.2e})"
        )
    os.replace(tmp, path)
    return path
