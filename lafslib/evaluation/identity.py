"""The identity of an exported model: which weights a report's numbers belong to.

A threshold measured with one model means nothing for another, so ``report.json`` records the
identity of the export it evaluated (its ``model.json`` name, embedding feature and width, and
the SHA-256 of ``model.safetensors``) and whoever reads the thresholds compares it with the
model in hand (:func:`same_model`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["model_identity", "same_model", "describe_identity"]

_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def model_identity(export: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of an export folder (or of ``hf://owner/repo[@revision]``, through its local
    copy).

    Args:
        export: folder with ``model.json`` and ``model.safetensors``, or an ``hf://`` source.

    Returns:
        ``{"name", "feature", "feature_dim", "weights_sha256"}``.

    Raises:
        InputNotFoundError, ExportError: no readable export there.
    """
    from lafslib.models.export import read_export_info

    if os.fspath(export).startswith("hf://"):
        from lafslib.models.convert.hub import resolve_export

        export = resolve_export(os.fspath(export))
    folder = Path(export)
    info = read_export_info(folder)
    folder = folder if folder.is_dir() else folder.parent
    weights = folder / "model.safetensors"
    if not weights.is_file():
        from lafslib.errors import InputNotFoundError

        raise InputNotFoundError(f"no model.safetensors in export {folder}")
    return {
        "name": info["name"],
        "feature": info.get("feature", "head"),
        "feature_dim": info.get("feature_dim", info.get("embed_dim")),
        "weights_sha256": _sha256(weights),
    }


def same_model(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """True when two identities name the same weights and the same embedding feature."""
    if not a or not b:
        return False
    keys = ("name", "feature", "weights_sha256")
    return all(a.get(k) == b.get(k) for k in keys)


def describe_identity(identity: dict[str, Any] | None) -> str:
    """A short human description: ``mobilefacenet (head, weights 90a00ba1…)``."""
    if not identity:
        return "an unknown model"
    sha = str(identity.get("weights_sha256", ""))[:8]
    return f"{identity.get('name', '?')} ({identity.get('feature', 'head')}, weights {sha}…)"
