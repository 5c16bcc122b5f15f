"""Projection heads: the DINO head (Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead"]


class DINOHead(nn.Module):
    """MLP in -> hidden -> ... -> bottleneck (GELU), L2-normalise, weight-normalised last layer.

    Args:
        in_dim: backbone feature width.
        out_dim: prototypes (65536 in DINO, 100000 in LAFS).
        hidden_dim: MLP width (2048).
        bottleneck_dim: width before the last layer (256).
        num_layers: MLP layers (3).
        use_bn: BatchNorm after hidden linears.
        norm_last_layer: freeze the weight-norm magnitude at 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            width = hidden_dim
        layers.append(nn.Linear(width, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        original0 = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            original0.fill_(1.0)
        if norm_last_layer:
            original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in_dim). Returns logits (B, out_dim)."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)
