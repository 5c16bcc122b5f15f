"""Losses: DINO self-distillation."""

from lafslib.losses.dino import DINOLoss

__all__ = ["DINOLoss"]
