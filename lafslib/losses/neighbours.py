"""Nearest-neighbour teacher targets for DINO (NNCLR, Dwibedi et al. ICCV 2021; MSF, Koohpayegani
et al. ICCV 2021): the student also predicts what the teacher said about *another photo* that
the teacher finds closest to this one, a positive that two views of one photo cannot give
(a different pose, light or expression of, often, the same person)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lafslib.losses.collectives import all_gather_rows


class NeighbourQueue(nn.Module):
    """FIFO support set of teacher SSL features and teacher head outputs of past batches.

    Args:
        size: Q, how many past images the queue holds.
        feature_dim: d, size of the teacher's SSL feature.
        out_dim: K, size of the teacher's head output.
        k: each target is the mean of the head outputs of the ``k`` nearest neighbours (cosine
            similarity of the SSL features); 1 is NNCLR, >1 MSF.

    Example:
        >>> queue = NeighbourQueue(size=64, feature_dim=8, out_dim=16)
        >>> queue.push(torch.randn(32, 8), torch.randn(32, 16))
        >>> queue.targets(torch.randn(4, 8)).shape
        torch.Size([4, 16])
    """

    def __init__(self, size: int, feature_dim: int, out_dim: int, k: int = 1) -> None:
        super().__init__()
        if size < 1 or k < 1 or k > size:
            raise ValueError(f"need 1 <= k <= size, got k={k}, size={size}")
        self.k = k
        self.register_buffer("features", torch.zeros(size, feature_dim))
        self.register_buffer("outputs", torch.zeros(size, out_dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def ready(self) -> bool:
        """True once the queue holds at least ``k`` entries."""
        return int(self.count) >= self.k

    @torch.no_grad()
    def targets(self, features: torch.Tensor) -> torch.Tensor:
        """Mean head output of the ``k`` stored entries nearest each row of ``features`` (B, d)
        -> (B, K), float32."""
        if not self.ready:
            raise RuntimeError(f"the queue holds {int(self.count)} entries, fewer than k={self.k}")
        filled = min(int(self.count), len(self.features))
        bank = self.features[:filled]
        sim = F.normalize(features.float(), dim=-1) @ bank.T
        nearest = sim.topk(self.k, dim=-1).indices
        return self.outputs[:filled][nearest].mean(dim=1)

    @torch.no_grad()
    def push(self, features: torch.Tensor, outputs: torch.Tensor) -> None:
        """Store a batch (B, d) and (B, K), gathered from every rank so all ranks hold the same
        queue; the oldest entries are overwritten."""
        features = all_gather_rows(F.normalize(features.detach().float(), dim=-1))
        outputs = all_gather_rows(outputs.detach().float())
        size = len(self.features)
        features, outputs = features[-size:], outputs[-size:]
        slots = (int(self.count) + torch.arange(len(features), device=features.device)) % size
        self.features[slots] = features
        self.outputs[slots] = outputs
        self.count += len(features)
