"""Backbones and heads, built by name through the registry."""

from lafslib.models import vit as _vit  # noqa: F401  (registers the ViT factories)
from lafslib.models._registry import (
    ModelInfo,
    create_model,
    list_models,
    model_info,
    register_model,
)
from lafslib.models.export import load_export, save_export
from lafslib.models.heads import DINOHead

__all__ = [
    "DINOHead",
    "ModelInfo",
    "create_model",
    "list_models",
    "load_export",
    "model_info",
    "register_model",
    "save_export",
]
