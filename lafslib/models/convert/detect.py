"""Which converter fits a checkpoint, from its entries and key names.

Detection answers only where the layout is unambiguous; otherwise the error names the keys
found and the formats that could fit, for ``--format`` to choose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lafslib.models.convert._common import WEIGHT_ENTRIES, ConversionError, is_state, short

__all__ = ["detect_format", "suggest_formats", "candidate_formats"]


def _inner(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The tensor dict of a training checkpoint (first weight entry found), else ``obj``."""
    if is_state(obj):
        return obj
    for key in ("teacher", "student", *WEIGHT_ENTRIES):
        if isinstance(obj.get(key), Mapping):
            return _inner(obj[key])
    return obj


def candidate_formats(obj: Mapping[str, Any]) -> list[str]:
    """Formats whose layout matches the checkpoint's keys (most specific first)."""
    keys = {k.removeprefix("module.") for k in _inner(obj)}

    def has(*names: str) -> bool:
        return all(n in keys for n in names)

    def starts(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    lightning = "pytorch-lightning_version" in obj or starts("model.input_layer.")
    if has("layers.0.layers.0.weight") or has("conv1.0.weight", "gdconv.depthwise.weight"):
        return ["mobilefacenet"]
    if lightning and starts("model.input_layer."):
        return ["adaface"]
    if starts("net.") or starts("model.net."):
        return ["cvlface"]
    if starts("input_layer."):
        return ["adaface", "cvlface"]
    if has("layer1.0.bn1.weight"):
        return ["insightface"]
    if starts("stn.") or starts("backbone.stn."):
        return ["partfvit"]
    if starts("patch_to_embedding.") or starts("backbone.patch_to_embedding."):
        return ["lafs"]
    if starts("patch_embed.proj.") or starts("backbone.patch_embed.proj."):
        if "teacher" in obj or starts("head.last_layer") or starts("backbone."):
            return ["dino"]
        return ["dino", "dinov2", "timm", "cvlface"]
    return []


def suggest_formats(obj: Mapping[str, Any]) -> str:
    """One sentence naming the formats that fit (or that none does)."""
    fits = candidate_formats(obj)
    if not fits:
        return "no known layout matches these keys"
    return "it looks like " + " or ".join(f"--format {f}" for f in fits)


def detect_format(obj: Mapping[str, Any], source: str) -> str:
    """The one format that fits ``obj``.

    Raises:
        ConversionError: none or several fit; the message lists keys and candidates.
    """
    fits = candidate_formats(obj)
    if len(fits) == 1:
        return fits[0]
    inner = list(_inner(obj))
    found = f"top-level entries {short(sorted(obj), 6)}; keys {short(inner, 4)}"
    if not fits:
        raise ConversionError(
            f"{source}: cannot tell the checkpoint's format ({found}); pass --format with one of "
            "insightface, mobilefacenet, adaface, cvlface, lafs, partfvit, dino, timm, dinov2"
        )
    raise ConversionError(
        f"{source}: several formats fit ({found}): pass --format " + " or --format ".join(fits)
    )
