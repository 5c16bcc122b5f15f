"""The margin loss of a finetuning recipe: ArcFace, CosFace, combined, AdaFace or FRABSM."""

from __future__ import annotations

from torch import nn

from lafslib.config import FinetuneConfig
from lafslib.losses import AdaFaceLoss, CombinedMarginLoss

__all__ = ["margin_loss"]


def margin_loss(cfg: FinetuneConfig) -> nn.Module:
    """The margin loss ``cfg.loss`` names, with its parameters."""
    c = cfg.loss
    if c.name == "arcface":
        return CombinedMarginLoss(c.scale, 1.0, c.m2, 0.0, c.gradient)
    if c.name == "cosface":
        return CombinedMarginLoss(c.scale, 1.0, 0.0, c.m3 or c.margin, c.gradient)
    if c.name == "combined":
        return CombinedMarginLoss(c.scale, c.m1, c.m2, c.m3, c.gradient)
    return AdaFaceLoss(c.scale, c.margin, c.h, c.t_alpha, 0.7 if c.name == "frabsm" else 1.0)
