"""lafslib: face-recognition representation learning (LAFS, KP-RPE, margin losses, evaluation)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "FaceEmbedder", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    """``lafslib.FaceEmbedder``, imported on first use (``import lafslib`` stays light)."""
    if name == "FaceEmbedder":
        from lafslib.inference import FaceEmbedder

        return FaceEmbedder
    raise AttributeError(f"module 'lafslib' has no attribute {name!r}")


def create_model(name: str, **kwargs: Any) -> Any:
    """Build a registered backbone by name (see :func:`list_models`)."""
    from lafslib.models import create_model as _create

    return _create(name, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a glob ``pattern``."""
    from lafslib.models import list_models as _list

    return _list(pattern)
