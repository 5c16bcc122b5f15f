"""Field helpers of the recipe dataclasses: required values and checked ranges."""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any

from lafslib.errors import ConfigError

__all__ = ["REQUIRED", "bounded", "SCALE", "check_value"]

REQUIRED: Any = MISSING


def bounded(
    default: Any,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A field whose value (when not None) must lie in the given range; checked at load."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata={"bounds": bounds})


SCALE = {"scale_range": True}  # [low, high] with 0 < low <= high <= 1 (crop area fractions)
_RELATION = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def check_value(value: Any, meta: Any, key: str, source: str) -> None:
    """Raise :class:`ConfigError` when a loaded value is outside its field's range."""
    if value is None:
        return
    for name, limit in meta.get("bounds", {}).items():
        ok = {"ge": value >= limit, "gt": value > limit, "le": value <= limit, "lt": value < limit}
        if not ok[name]:
            rules = ", ".join(f"{_RELATION[n]} {v:g}" for n, v in meta["bounds"].items())
            raise ConfigError(f"{source}: key '{key}' must be {rules}, got {value!r}")
    if meta.get("scale_range") and not (len(value) == 2 and 0 < value[0] <= value[1] <= 1):
        raise ConfigError(
            f"{source}: key '{key}' must be [low, high] with 0 < low <= high <= 1, got {value!r}"
        )
