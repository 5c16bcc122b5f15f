"""Landmark consistency of LAFS finetuning: the trainable landmark CNN of a Part fViT stays
close to a frozen copy of its stage-1 self, with a weight that decays over the epochs."""

from __future__ import annotations

import copy

from torch import nn

from lafslib.config import ConfigError, FinetuneConfig

__all__ = ["landmark_consistency_weight", "landmark_reference"]


def landmark_reference(model: nn.Module, cfg: FinetuneConfig) -> nn.Module | None:
    """The frozen copy of a Part fViT's initial landmark CNN for the landmark-consistency loss
    (LAFS finetuning keeps the trainable landmark CNN close to the stage-1 one), or None."""
    if cfg.loss.landmark_consistency <= 0:
        return None
    if not hasattr(model, "landmark_net"):
        raise ConfigError(
            f"loss.landmark_consistency needs a model with a landmark CNN (Part fViT), "
            f"got {cfg.model.name}"
        )
    reference = copy.deepcopy(model.landmark_net).eval()
    return reference.requires_grad_(False)


def landmark_consistency_weight(cfg: FinetuneConfig, epoch: float) -> float:
    """Weight of the landmark-consistency MSE at a (fractional) epoch: ``landmark_consistency``
    decayed linearly to 0 over ``landmark_consistency_epochs`` (constant when that is 0)."""
    w, span = cfg.loss.landmark_consistency, cfg.loss.landmark_consistency_epochs
    return w if span <= 0 else w * max(0.0, 1.0 - epoch / span)
