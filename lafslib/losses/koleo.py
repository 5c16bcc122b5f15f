"""KoLeo regulariser: spread features uniformly over the batch (Sablayrolles et al., "Spreading
vectors for similarity search", ICLR 2019; used on the student CLS token by DINOv2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["koleo_loss"]


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate, negated: ``-mean_i log min_{j != i} ||x_i - x_j||``
    over L2-normalised rows.

    Args:
        features: (B, D), B >= 2.
        eps: keeps the log finite for duplicate rows.

    Returns:
        Scalar loss; lower when the rows are spread out.
    """
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"koleo_loss needs (B >= 2, D) features, got {tuple(features.shape)}")
    x = F.normalize(features.float(), dim=-1)
    with torch.no_grad():
        sim = x @ x.t()
        sim.fill_diagonal_(-2.0)
        nearest = sim.argmax(dim=1)
    distance = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distance + eps).mean()
