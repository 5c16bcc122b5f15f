"""Student / teacher network of self-supervised pretraining: backbone + DINO head over views."""

from __future__ import annotations

import torch
from torch import nn

from lafslib.transforms import group_views

__all__ = ["SSLNetwork"]


class SSLNetwork(nn.Module):
    """Backbone + DINO head applied to a list of views, one backbone pass per token count.

    With ``mosaic_views`` (LAFS views: patches already sampled at the landmarks), a backbone
    that samples its own patches (Part fViT) runs its transformer on the mosaics; on whole-image
    views (multi-crop) it predicts its landmarks itself.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, mosaic_views: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.mosaic_views = mosaic_views

    @property
    def encoder(self) -> nn.Module:
        """The module whose ``forward_ssl`` encodes the views: a Part fViT's transformer on
        mosaic views, else the backbone."""
        if hasattr(self.backbone, "landmark_net") and self.mosaic_views:
            return self.backbone.vit
        return self.backbone

    def forward(
        self, views: list[dict[str, torch.Tensor]], return_features: bool = False
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Head outputs, one (B, out_dim) tensor per view, in view order; with
        ``return_features`` also the backbone's SSL features, one (B, ssl_dim) per view."""
        outputs: list[torch.Tensor] = [torch.empty(0)] * len(views)
        features: list[torch.Tensor] = [torch.empty(0)] * len(views)
        samples_patches = hasattr(self.backbone, "landmark_net")
        encoder = self.encoder
        for indices, merged in group_views(views):
            centers = (
                None if samples_patches and not self.mosaic_views else merged.get("token_centers")
            )
            feats = encoder.forward_ssl(merged["image"], merged.get("keypoints"), centers)
            for i, chunk, feat in zip(
                indices, self.head(feats).chunk(len(indices)), feats.chunk(len(indices))
            ):
                outputs[i], features[i] = chunk, feat
        return (outputs, features) if return_features else outputs
