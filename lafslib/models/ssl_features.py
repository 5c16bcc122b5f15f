"""A backbone embedded by its self-supervised feature, as a pretraining export is."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lafslib.models._registry import model_info

__all__ = ["SSLFeatures"]


class SSLFeatures(nn.Module):
    """Embed with ``backbone.forward_ssl`` (the feature DINO / LAFS train: e.g. the normed CLS
    token of a ViT) instead of the backbone's embedding head, which pretraining never trains.

    Args:
        backbone: any lafslib backbone (it has ``forward_ssl`` and ``ssl_dim``).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.pretrained_cfg = dataclasses.replace(model_info(backbone), embed_dim=backbone.ssl_dim)

    @property
    def last_landmarks(self) -> torch.Tensor | None:
        """The landmarks a Part fViT backbone predicted in its last forward (else None)."""
        return getattr(self.backbone, "last_landmarks", None)

    def forward(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] (and keypoints (B, K, 2) for KP-RPE backbones) to the
        SSL feature (B, ssl_dim)."""
        return self.backbone.forward_ssl(x, keypoints, token_centers)
