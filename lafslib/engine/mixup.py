"""Mixup of a batch with itself (Zhang et al., ICLR 2018) and the margin loss of mixed
targets."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["mixup_batch", "mixup_margin_loss"]


def mixup_batch(
    x: torch.Tensor,
    labels: torch.Tensor,
    keypoints: torch.Tensor,
    alpha: float,
    prob: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix a batch with a permutation of itself (mixup, Zhang et al., ICLR 2018).

    With probability ``prob``: ``lam ~ Beta(alpha, alpha)``, ``x = lam * x + (1 - lam) * x[perm]``
    and keypoints likewise (aligned faces: the mixed points stay close to both); else the batch
    is returned unchanged with ``lam = 1``.

    Args:
        x: images (B, 3, H, W).
        labels: (B,) identities.
        keypoints: (B, K, 2).
        alpha: Beta parameter (<= 0 disables mixup).
        prob: probability of mixing this batch.
        rng: random source (seeded per step, so resuming replays the same mixes).

    Returns:
        (mixed images, mixed keypoints, labels_a, labels_b, lam); the loss is
        ``lam * loss(labels_a) + (1 - lam) * loss(labels_b)``.
    """
    if alpha <= 0 or prob <= 0 or rng.random() >= prob:
        return x, keypoints, labels, labels, 1.0
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(len(x)), device=x.device)
    x = lam * x + (1.0 - lam) * x[perm]
    keypoints = lam * keypoints + (1.0 - lam) * keypoints[perm]
    return x, keypoints, labels, labels[perm], lam


def mixup_margin_loss(
    classifier: nn.Module,
    embeddings: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """Per-sample ``lam * CE(margin on labels_a) + (1 - lam) * CE(margin on labels_b)``.

    The margin is applied to each target in its own term. The margin loss's running statistics
    (AdaFace) are updated once, by the first term.

    Args:
        classifier: a :class:`~lafslib.losses.PartialFC` (margin logits + cross-entropy).
        embeddings: (B, D).
        labels_a: (B,) first targets.
        labels_b: (B,) second targets.
        lam: weight of the first targets.
    """
    ce = classifier(embeddings, labels_a, reduction="none")
    if lam >= 1.0:
        return ce
    margin = classifier.margin_loss
    was_training = margin.training
    margin.train(False)  # no second update of running statistics
    try:
        ce_b = classifier(embeddings, labels_b, reduction="none")
    finally:
        margin.train(was_training)
    return lam * ce + (1.0 - lam) * ce_b
