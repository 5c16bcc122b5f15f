"""Backbones and heads, built by name through the registry."""

from lafslib.models._registry import (
    ModelInfo,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
