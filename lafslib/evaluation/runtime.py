"""The embedding model of an export, run by PyTorch or by ONNX Runtime.

:func:`load_embedding_model` is what ``lafs eval``, ``lafs embed`` and the
:class:`~lafslib.inference` embedder call: it takes an export folder (``model.safetensors`` +
``model.json``, and ``model.onnx`` when written with ``--onnx``) or a published model
``hf://owner/repo[@revision]`` and returns a module that maps images (B, 3, H, W) in [-1, 1]
(+ keypoints (B, K, 2) for KP-RPE models) to embeddings (B, D), whichever runtime computes them.

Backends: ``"torch"`` rebuilds the model from its weights (any device); ``"onnxruntime"`` runs
the export's ``model.onnx`` on the CPU; ``"auto"`` takes ONNX Runtime when the export records a
``model.onnx`` in its ``model.json``, onnxruntime is installed and the device is the CPU, else
PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lafslib.errors import ExportError
from lafslib.models._registry import ModelInfo
from lafslib.models.export import load_export, read_export_info

__all__ = ["BACKENDS", "OnnxEmbedder", "load_embedding_model", "onnx_file", "onnxruntime_ok"]

BACKENDS = ("auto", "torch", "onnxruntime")


def onnxruntime_ok() -> bool:
    """Whether onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_file(folder: str | os.PathLike[str], info: dict[str, Any]) -> Path | None:
    """The export's ONNX graph, when ``model.json`` records one (``"onnx": {"file": ...}``)
    and the file exists; a ``model.onnx`` that ``model.json`` does not record may belong to
    earlier weights and is not used."""
    entry = info.get("onnx")
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return None
    path = Path(folder) / entry["file"]
    return path if path.is_file() else None


def _info_from_json(info: dict[str, Any]) -> ModelInfo:
    """The :class:`ModelInfo` the PyTorch model of this ``model.json`` would carry."""
    fields = {k: info[k] for k in ModelInfo.__dataclass_fields__ if k in info}
    for key in ("input_size", "mean", "std"):
        if key in fields:
            fields[key] = tuple(fields[key])
    if info.get("feature") == "ssl" and "feature_dim" in info:
        fields["embed_dim"] = int(info["feature_dim"])
    return ModelInfo(**fields)


class OnnxEmbedder(nn.Module):
    """An export's ``model.onnx`` in an ONNX Runtime CPU session, called like the PyTorch model.

    Args:
        path: the ONNX file (inputs ``images`` and, for KP-RPE models, ``keypoints``;
            output ``embeddings``).
        pretrained_cfg: the export's preprocessing metadata.
        threads: intra-op threads (default ``torch.get_num_threads()``, which follows
            ``OMP_NUM_THREADS``).
    """

    backend = "onnxruntime"

    def __init__(self, path: Path, pretrained_cfg: ModelInfo, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own bare classes
            first = str(exc).strip().splitlines()
            raise ExportError(
                f"{path}: ONNX Runtime cannot load it ({first[0] if first else exc})"
            ) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.path = path
        self.pretrained_cfg = pretrained_cfg

    def forward(self, x: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] (+ keypoints (B, K, 2) in [0, 1] when the graph takes
        them) -> embeddings (B, D) float32 on the CPU."""
        feeds = {self.input_names[0]: np.ascontiguousarray(x.detach().cpu().float().numpy())}
        if len(self.input_names) > 1:
            if keypoints is None:
                raise ValueError(f"{self.path} needs keypoints (B, K, 2)")
            feeds[self.input_names[1]] = np.ascontiguousarray(
                keypoints.detach().cpu().float().numpy()
            )
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}"


def _resolve(source: str | os.PathLike[str]) -> Path:
    """A local export folder for ``source`` (a folder, or an ``hf://`` model)."""
    text = os.fspath(source)
    if text.startswith("hf://"):
        from lafslib.models.convert.hub import resolve_export

        return resolve_export(text)
    path = Path(text)
    return path if path.is_dir() or not path.exists() else path.parent


def load_embedding_model(
    source: str | os.PathLike[str], backend: str = "auto", device: str = "cpu"
) -> nn.Module:
    """The embedding model of an export, on the backend asked for.

    Args:
        source: an export folder (``model.safetensors`` + ``model.json``, maybe
            ``model.onnx``) or ``hf://owner/repo[@revision]`` (a lafslib export or a CVLFace
            model published on the Hugging Face Hub, read through its local cache).
        backend: ``"auto"`` (ONNX Runtime when the export records ``model.onnx``, onnxruntime
            is installed and ``device`` is the CPU; else PyTorch), ``"torch"`` or
            ``"onnxruntime"``.
        device: where the PyTorch model runs (ONNX Runtime runs on the CPU).

    Returns:
        A module in eval mode mapping (B, 3, H, W) in [-1, 1] (+ keypoints (B, K, 2) when
        ``pretrained_cfg.needs_keypoints``) to (B, D); it carries ``pretrained_cfg`` and
        ``backend`` (``"torch"`` or ``"onnxruntime"``).

    Raises:
        InputNotFoundError: no such folder, or no ``model.json`` / weights in it.
        ExportError: the export is damaged, or the backend asked for cannot run it.
    """
    if backend not in BACKENDS:
        raise ExportError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    folder = _resolve(source)
    info = read_export_info(folder)
    onnx = onnx_file(folder, info)
    on_cpu = torch.device(device).type == "cpu"
    if backend == "onnxruntime":
        if onnx is None:
            raise ExportError(
                f"{folder}: no model.onnx recorded in its model.json for --backend onnxruntime "
                f"(write one with 'lafs convert ... --onnx' or 'lafs export ... --onnx')"
            )
        if not on_cpu:
            raise ExportError(
                f"--backend onnxruntime runs on the CPU, not on {device}; use --backend torch"
            )
        if not onnxruntime_ok():
            raise ExportError(
                "--backend onnxruntime needs onnxruntime: pip install 'lafslib[onnx]'"
            )
    use_onnx = backend == "onnxruntime" or (
        backend == "auto" and onnx is not None and on_cpu and onnxruntime_ok()
    )
    if use_onnx and onnx is not None:
        return OnnxEmbedder(onnx, _info_from_json(info)).eval()
    model = load_export(folder).to(device).eval()
    model.backend = "torch"
    return model
