"""Losses: DINO self-distillation and margin softmax losses."""

from lafslib.losses.dino import DINOLoss, sinkhorn_knopp
from lafslib.losses.koleo import koleo_loss
from lafslib.losses.margin import AdaFaceLoss, CombinedMarginLoss, arcface, cosface, frabsm_weights
from lafslib.losses.neighbours import NeighbourQueue
from lafslib.losses.partial_fc import PartialFC

__all__ = [
    "AdaFaceLoss",
    "CombinedMarginLoss",
    "DINOLoss",
    "NeighbourQueue",
    "PartialFC",
    "arcface",
    "cosface",
    "frabsm_weights",
    "koleo_loss",
    "sinkhorn_knopp",
]
