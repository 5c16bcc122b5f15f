"""Named model factories (timm-style): ``register_model``, ``create_model``, ``list_models``.

Every factory returns an ``nn.Module`` whose ``pretrained_cfg`` attribute is a
:class:`ModelInfo` describing its preprocessing, so that exported weights carry it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from lafslib.errors import ModelArgumentError, UnknownModelError

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]


@dataclass
class ModelInfo:
    """Preprocessing metadata that travels with a model's weights."""

    name: str
    input_size: tuple[int, int, int] = (3, 112, 112)
    color_space: str = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    needs_keypoints: bool = False
    num_keypoints: int = 5
    embed_dim: int = 512
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        return out


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model factory under its function name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model '{name}' is already registered")
    _REGISTRY[name] = fn
    return fn


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with factory keyword arguments.

    Raises:
        UnknownModelError: unknown name (a KeyError; the message lists close matches).
        ModelArgumentError: keyword arguments the factory does not take (a TypeError).
    """
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if str(name).split("_")[0] in n][:8]
        raise UnknownModelError(
            f"unknown model '{name}'; similar: {close or sorted(_REGISTRY)[:8]}"
        )
    try:
        model = _REGISTRY[name](**kwargs)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise ModelArgumentError(
            f"model '{name}' does not take the arguments {sorted(kwargs)} ({exc})"
        ) from None
    info = getattr(model, "pretrained_cfg", None)
    if isinstance(info, ModelInfo):
        info.name = name
        info.kwargs = dict(kwargs)
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a glob pattern."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(model: nn.Module) -> ModelInfo:
    """The model's :class:`ModelInfo` (a default one if it has none)."""
    info = getattr(model, "pretrained_cfg", None)
    return info if isinstance(info, ModelInfo) else ModelInfo(name=type(model).__name__)
