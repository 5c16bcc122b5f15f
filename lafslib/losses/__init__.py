"""Losses: DINO self-distillation and margin softmax losses."""

from lafslib.losses.dino import DINOLoss
from lafslib.losses.margin import AdaFaceLoss, CombinedMarginLoss, arcface, cosface, frabsm_weights

__all__ = ["AdaFaceLoss", "CombinedMarginLoss", "DINOLoss", "arcface", "cosface", "frabsm_weights"]
