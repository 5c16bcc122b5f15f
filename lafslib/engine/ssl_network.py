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

    def ssl_unused_parameters(self) -> set[str]:
        """Names of the parameters the views never reach: the backbone's embedding head
        (its ``ssl_unused`` module prefixes), used by ``forward`` but not ``forward_ssl``."""
        prefixes = tuple(f"backbone.{p}." for p in getattr(self.backbone, "ssl_unused", ()))
        return {n for n, _ in self.named_parameters() if prefixes and n.startswith(prefixes)}

    def forward(
        self, views: list[dict[str, torch.Tensor]], return_features: bool = False
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Head outputs, one (B, out_dim) tensor per view, in view order; with
        ``return_features`` also the backbone's SSL features, one (B, ssl_dim) per view.

        The backbone runs once per token count; the head once on the features of every view
        (as DINO's multi-crop wrapper), so its weight-normed last layer is built once.
        """
        features: list[torch.Tensor] = [torch.empty(0)] * len(views)
        samples_patches = hasattr(self.backbone, "landmark_net")
        encoder = self.encoder
        order: list[int] = []
        for indices, merged in group_views(views):
            centers = (
                None if samples_patches and not self.mosaic_views else merged.get("token_centers")
            )
            feats = encoder.forward_ssl(merged["image"], merged.get("keypoints"), centers)
            for i, feat in zip(indices, feats.chunk(len(indices))):
                features[i] = feat
            order.extend(indices)
        merged_out = self.head(torch.cat([features[i] for i in order]))
        outputs: list[torch.Tensor] = [torch.empty(0)] * len(views)
        for i, chunk in zip(order, merged_out.split([len(features[i]) for i in order])):
            outputs[i] = chunk
        return (outputs, features) if return_features else outputs
