"""Exported backbones: ``model.safetensors`` + ``model.json`` (registry name, kwargs, preprocessing).

Loading rebuilds the model from the registry and reads tensors with safetensors, so an export
never executes code. A missing, truncated or mismatched file raises
:class:`~lafslib.errors.ExportError` naming it.

Writing one is all or nothing: every file is written to a temporary name first, then renamed
into place (``model.json`` last), so a full disk leaves the previous export as it was
(:class:`~lafslib.errors.DiskFullError`); files of the previous export that the new one does not
write (a stale ``model.onnx``) are removed; files get the permissions the umask gives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from lafslib.errors import (
    DiskFullError,
    ExportError,
    InputNotFoundError,
    disk_full,
    disk_full_message,
)
from lafslib.models._registry import create_model, model_info
from lafslib.models.ssl_features import SSLFeatures

__all__ = [
    "check_export_target",
    "load_export",
    "load_export_weights",
    "read_export_info",
    "save_export",
]


FEATURES = ("head", "ssl")
_DINO_HEAD = "dino_head.safetensors"  # written beside an export by lafs convert --format dino


def check_export_target(out_dir: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Refuse to write an export into ``out_dir`` when it already holds one (``model.json`` or
    ``model.safetensors``), unless ``overwrite``: a new export never replaces an old one by
    accident. Call it before any work, so that the mistake costs nothing.

    Raises:
        ExportError: naming the folder, what it holds, and the two ways on.
    """
    out = Path(out_dir)
    found = [n for n in ("model.json", "model.safetensors") if (out / n).is_file()]
    if found and not overwrite:
        what = ""
        if "model.json" in found:
            try:
                info = json.loads((out / "model.json").read_text())
                what = f" of {info.get('name', '?')}" + (
                    f" from {info['source']}" if "source" in info else ""
                )
            except (OSError, ValueError):
                what = ""
        raise ExportError(
            f"{out} already holds an export{what} ({', '.join(found)}); give another output "
            "folder, or --overwrite to replace it"
        )


def save_export(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    feature: str = "head",
    staged: Mapping[str, str | os.PathLike[str]] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``out_dir``, replacing a previous
    export there as a whole.

    Args:
        model: the backbone.
        out_dir: export folder.
        feature: what the export embeds with: ``"head"`` (the backbone's embedding head, as
            trained by finetuning) or ``"ssl"`` (its self-supervised feature ``forward_ssl``,
            for pretraining exports); recorded in ``model.json`` with its width.
        staged: more files of this export already written elsewhere on the same file system
            (``name -> path``, e.g. ``model.onnx``), moved in with the weights.
        extra: more ``model.json`` entries (step, source, ...).

    Raises:
        DiskFullError: the disk filled up; the previous export is intact.
    """
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = model_info(model).to_dict()
    info["feature"] = feature
    info["feature_dim"] = int(model.ssl_dim if feature == "ssl" else info["embed_dim"])
    info.update(extra)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = out / "model.safetensors.tmp"
    tmp_json = out / "model.json.tmp"
    try:
        save_file(state, str(tmp), metadata={"format": "pt", "name": info["name"]})
        tmp_json.write_text(json.dumps(info, indent=2) + "\n")
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        full = disk_full(exc)
        if full is not None:
            raise DiskFullError(disk_full_message(full, out / "model.safetensors")) from exc
        raise
    files = {**(staged or {}), "model.safetensors": tmp, "model.json": tmp_json}
    _commit(out, {name: Path(p) for name, p in files.items()})
    return out


def _umask_mode() -> int:
    """``0o666`` less the process umask: what ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _commit(out: Path, files: dict[str, Path]) -> None:
    """Move the export's written ``files`` into ``out`` (``model.json`` last) with the umask's
    permissions, then remove the files of a previous export that this one lacks (its ONNX graph
    and weights, the DINO head of a converted DINO checkpoint: rewritten after this when the
    new export has them)."""
    mode = _umask_mode()
    for name, src in sorted(files.items(), key=lambda item: item[0] == "model.json"):
        os.chmod(src, mode)
        os.replace(src, out / name)
    for stale in [*out.glob("model.onnx*"), out / _DINO_HEAD]:
        if stale.name not in files and not stale.name.endswith(".tmp") and stale.is_file():
            stale.unlink()


def _local(path: str | os.PathLike[str]) -> Path:
    """The local folder of an export: ``path`` itself, or for a published model
    ``hf://owner/repo[@revision]`` its folder in the cache (:mod:`lafslib.models.convert.hub`)."""
    if isinstance(path, str) and path.startswith("hf://"):
        from lafslib.models.convert.hub import resolve_export

        return resolve_export(path)
    return Path(path)


def read_export_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``model.json`` of an export folder (checked: a JSON object with a model name);
    ``path`` may also be a published model ``hf://owner/repo[@revision]``.

    Raises:
        InputNotFoundError: no such folder, or no ``model.json`` in it.
        ExportError: ``model.json`` is not valid JSON or names no model.
    """
    path = _local(path)
    if not path.exists():
        raise InputNotFoundError(f"export folder not found: {path}")
    meta = path / "model.json" if path.is_dir() else path.with_name("model.json")
    if not meta.is_file():
        raise InputNotFoundError(
            f"no model.json in export {path} (write one with 'lafs export' or 'lafs convert')"
        )
    try:
        info = json.loads(meta.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ExportError(f"{meta}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("name"), str):
        raise ExportError(f"{meta}: expected a JSON object with the model 'name'")
    if not isinstance(info.get("kwargs", {}), dict):
        raise ExportError(f"{meta}: 'kwargs' must be a JSON object")
    return info


def load_export_weights(
    model: nn.Module, path: str | os.PathLike[str], strict: bool = True
) -> None:
    """Load an export's ``model.safetensors`` into ``model`` (every key must match); ``path``
    may also be ``hf://owner/repo[@revision]``.

    Raises:
        InputNotFoundError: no ``model.safetensors``.
        ExportError: not a safetensors file, or weights of another model.
    """
    path = _local(path)
    weights = (path if path.is_dir() else path.parent) / "model.safetensors"
    if not weights.is_file():
        raise InputNotFoundError(f"no model.safetensors in export {weights.parent}")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # SafetensorError, OSError, ...: a damaged or foreign file
        raise ExportError(f"{weights}: not a readable safetensors file ({exc})") from None
    name = model_info(model).name
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "")
        raise ExportError(
            f"{weights}: weights do not fit model '{name}' ({detail or 'shape mismatch'})"
        ) from None
    if strict and (missing or unexpected):
        raise ExportError(
            f"{weights}: weights do not match model '{name}': "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def load_export(path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Rebuild an exported model (eval mode) from its folder; an export whose ``model.json``
    says ``"feature": "ssl"`` comes wrapped in :class:`SSLFeatures`, so that calling it gives
    the self-supervised feature. ``path`` may also be ``hf://owner/repo[@revision]``."""
    path = _local(path)
    info = read_export_info(path)
    folder = path if path.is_dir() else path.parent
    model = create_model(info["name"], **info.get("kwargs", {}))
    load_export_weights(model, folder, strict)
    feature = info.get("feature", "head")
    if feature not in FEATURES:
        raise ExportError(
            f"{folder / 'model.json'}: feature must be one of {FEATURES}, got {feature!r}"
        )
    return (SSLFeatures(model) if feature == "ssl" else model).eval()
