"""PartialFC: a class-sharded, sampled margin classifier (An et al., "Partial FC: Training 10
Million Identities on a Single Machine", ICCVW 2021; insightface ``partial_fc_v2``).

Class centres are split evenly across ranks. Every rank gathers the embeddings and labels of
the whole global batch (the gather keeps gradients), keeps a random subset of its negative
centres (positives always kept, ``sample_rate`` of its centres in all), applies the margin loss
to its cosine logits and computes the softmax cross-entropy across ranks (max, sum of exps and
target logit all-reduced with autograd). With one process and ``sample_rate=1`` it is exactly
a plain normalised classifier followed by the margin loss and a cross-entropy. Under several
processes the gradient reaching each rank's embeddings is ``world_size`` times d(loss)/d(emb),
which DistributedDataParallel's gradient averaging divides back; the shard's centres receive
d(loss)/d(weight) exactly.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lafslib.losses.collectives import all_gather_rows

__all__ = ["PartialFC"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class PartialFC(nn.Module):
    """Sharded, sampled classifier + margin loss + distributed cross-entropy.

    Args:
        margin_loss: maps (cosine (B, C'), labels (B,) with -1 for no local target) to logits;
            an AdaFace-style loss also receives the feature norms.
        embedding_dim: D.
        num_classes: total identities C (sharded across ranks).
        sample_rate: fraction of this rank's centres used per step (positives always kept).
    """

    def __init__(
        self, margin_loss: nn.Module, embedding_dim: int, num_classes: int, sample_rate: float = 1.0
    ) -> None:
        super().__init__()
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.rank = dist.get_rank() if _distributed() else 0
        self.world_size = dist.get_world_size() if _distributed() else 1
        per_rank = math.ceil(num_classes / self.world_size)
        self.class_start = min(per_rank * self.rank, num_classes)
        self.num_local = min(per_rank, num_classes - self.class_start)
        self.num_classes = num_classes
        self.sample_rate = sample_rate
        self.margin_loss = margin_loss
        self.weight = nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_dim)))
        if self.world_size > 1:
            # every rank computes the same global loss and the differentiable all-reduces sum
            # the ranks' gradients: rescale so the shard receives d(loss)/d(weight)
            self.weight.register_hook(lambda g: g / self.world_size)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        if not _distributed():
            return x
        if x.requires_grad:
            from torch.distributed.nn.functional import all_gather

            return torch.cat(all_gather(x))
        return all_gather_rows(x)

    def _all_reduce(self, x: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
        if not _distributed():
            return x
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x, op=op)

    @torch.no_grad()
    def full_weight(self) -> torch.Tensor:
        """All class centres (C, D), gathered from every rank (world-size independent)."""
        if not _distributed():
            return self.weight.detach().clone()
        per_rank = math.ceil(self.num_classes / self.world_size)
        padded = torch.zeros(per_rank, self.weight.shape[1], device=self.weight.device)
        padded[: self.num_local] = self.weight
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat(parts)[: self.num_classes]

    @torch.no_grad()
    def load_full_weight(self, weight: torch.Tensor) -> None:
        """Take this rank's shard of all class centres (C, D)."""
        if weight.shape[0] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class centres, got {weight.shape[0]}")
        self.weight.copy_(weight[self.class_start : self.class_start + self.num_local])

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """Cross-entropy over the global batch.

        Args:
            embeddings: (B, D) this rank's embeddings (not normalised).
            labels: (B,) global identity labels.
            reduction: "mean", or "none" for the per-sample losses of the global batch.
        """
        emb = self._gather(embeddings)
        labels = self._gather(labels)
        local = labels - self.class_start
        in_shard = (local >= 0) & (local < self.num_local)
        local = torch.where(in_shard, local, torch.full_like(local, -1))
        weight = self.weight
        if self.sample_rate < 1:
            positives = torch.unique(local[in_shard])
            keep = max(int(self.sample_rate * self.num_local), len(positives))
            score = torch.rand(self.num_local, device=emb.device)
            score[positives] = 2.0
            index = torch.sort(torch.topk(score, keep).indices).values
            local = torch.where(in_shard, torch.searchsorted(index, local), local)
            weight = weight[index]
        cosine = F.normalize(emb) @ F.normalize(weight).T
        cosine = cosine.clamp(-1, 1)
        if getattr(self.margin_loss, "uses_norms", False):
            logits = self.margin_loss(cosine, emb.norm(dim=1), local)
        else:
            logits = self.margin_loss(cosine, local)
        logits = logits.float()
        row_max = logits.detach().max(dim=1, keepdim=True).values
        if _distributed():
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        sum_exp = self._all_reduce(torch.exp(logits - row_max).sum(dim=1))
        rows = torch.arange(len(local), device=logits.device)
        target = torch.where(
            in_shard, logits[rows, local.clamp(min=0)] - row_max[:, 0], torch.zeros_like(sum_exp)
        )
        target = self._all_reduce(target)
        losses = torch.log(sum_exp) - target
        return losses if reduction == "none" else losses.mean()
