"""Margin softmax losses for face recognition: ArcFace, CosFace, combined margins, AdaFace.

Each loss maps cosine logits ``cos(theta)`` (B, C) and labels (B,) to scaled logits for a
cross-entropy, so it works with any classifier that produces cosines (a plain normalised
linear layer or PartialFC's sampled centres).

- Combined margin (insightface): target logit ``s * (cos(m1 * theta + m2) - m3)``; ArcFace is
  (1, 0.5, 0), CosFace (1, 0, 0.4). All three margins are applied (insightface drops m2 when
  m3 > 0). Where the angle ``m1 * theta + m2`` exceeds pi the cosine would rise again and reward
  a worse sample; lafslib continues the target linearly past pi, ``-1 - (angle - pi)``, so the
  target logit stays continuous and decreasing in theta.
- ``gradient="true"`` (default) back-propagates through the margin; ``"straight_through"``
  reproduces insightface, which computes the margin under ``no_grad`` so the target logit's
  gradient is that of the plain scaled cosine.
- FRABSM: AdaFace with the additive term scaled by 0.7 (``additive_scale``) and sample-mining
  weights on the cross-entropy (:func:`frabsm_weights`).
- AdaFace (Kim et al., CVPR 2022): the margin adapts to the feature norm ``||f||`` (image
  quality): ``z = clip(h * (||f|| - mu) / (sigma + 1e-3), -1, 1)`` with batch statistics mu,
  sigma tracked by an EMA of rate ``t_alpha``; ``g_ang = -m z``, ``g_add = m + m z``; every
  cosine is clamped to ``[-1 + 1e-3, 1 - 1e-3]`` and the target becomes
  ``s * (cos(clip(theta + g_ang, 1e-3, pi - 1e-3)) - g_add)``, as AdaFace's ``head.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["CombinedMarginLoss", "AdaFaceLoss", "arcface", "cosface", "frabsm_weights"]

_EPS = 1e-6
_ADAFACE_EPS = 1e-3  # AdaFace's clamp of the cosines and of the target angle


def _target_cos_combined(theta: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    """cos(m1 * theta + m2) - m3, continued monotonically past the angle pi."""
    angle = m1 * theta + m2
    inside = torch.cos(angle.clamp(max=math.pi))
    # beyond pi, keep decreasing with slope 1 in the angle (cos has zero slope at pi)
    beyond = -1.0 - (angle - math.pi)
    return torch.where(angle <= math.pi, inside, beyond) - m3


class CombinedMarginLoss(nn.Module):
    """ArcFace / CosFace / combined margin logits.

    Args:
        scale: s (64).
        m1: multiplicative angular margin (1.0).
        m2: additive angular margin (0.5 for ArcFace).
        m3: additive cosine margin (0.4 for CosFace).
        gradient: ``"true"`` or ``"straight_through"`` (insightface's no-grad margin).

    Example:
        >>> loss = CombinedMarginLoss(m2=0.5)  # ArcFace
        >>> logits = loss(torch.rand(4, 10) * 2 - 1, torch.tensor([0, 1, 2, 3]))
        >>> ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    """

    def __init__(
        self,
        scale: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        gradient: str = "true",
    ) -> None:
        super().__init__()
        if gradient not in ("true", "straight_through"):
            raise ValueError(f"gradient must be 'true' or 'straight_through', got {gradient!r}")
        self.scale, self.m1, self.m2, self.m3 = scale, m1, m2, m3
        self.gradient = gradient

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args: cosine (B, C) in [-1, 1]; labels (B,), -1 marks rows without a target class.

        Returns:
            scaled logits (B, C).
        """
        rows = torch.nonzero(labels >= 0).squeeze(1)
        cols = labels[rows]
        target = cosine[rows, cols]
        theta = torch.acos(target.clamp(-1 + _EPS, 1 - _EPS))
        new = _target_cos_combined(theta, self.m1, self.m2, self.m3)
        if self.gradient == "straight_through":
            new = target + (new - target).detach()
        logits = cosine.clone()
        logits[rows, cols] = new.to(logits.dtype)
        return logits * self.scale


def arcface(scale: float = 64.0, margin: float = 0.5, gradient: str = "true") -> CombinedMarginLoss:
    """ArcFace: s * cos(theta + m) (Deng et al., CVPR 2019)."""
    return CombinedMarginLoss(scale, 1.0, margin, 0.0, gradient)


def cosface(scale: float = 64.0, margin: float = 0.4, gradient: str = "true") -> CombinedMarginLoss:
    """CosFace: s * (cos(theta) - m) (Wang et al., CVPR 2018)."""
    return CombinedMarginLoss(scale, 1.0, 0.0, margin, gradient)


class AdaFaceLoss(nn.Module):
    """AdaFace: quality-adaptive margin from the feature norm (Kim et al., CVPR 2022).

    Args:
        scale: s (64).
        margin: m (0.4).
        h: norm concentration (0.333).
        t_alpha: EMA rate of the batch norm statistics (0.01).
        additive_scale: factor on the additive term g_add (1.0; FRABSM uses 0.7).
    """

    def __init__(
        self,
        scale: float = 64.0,
        margin: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
        additive_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale, self.margin, self.h, self.t_alpha = scale, margin, h, t_alpha
        self.additive_scale = additive_scale
        self.uses_norms = True
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def margin_scaler(self, norms: torch.Tensor) -> torch.Tensor:
        """``z = clip(h * (clip(||f||, 0.001, 100) - mu) / (sigma + 1e-3), -1, 1)`` (B,) with
        the current statistics, from feature norms (B,) (detached)."""
        safe = norms.detach().clamp(0.001, 100.0)
        return ((safe - self.batch_mean) / (self.batch_std + 1e-3) * self.h).clamp(-1, 1)

    def forward(
        self, cosine: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Args: cosine (B, C); norms (B,) feature norms ||f|| (detached here); labels (B,),
        -1 marks rows without a target class.

        Returns:
            scaled logits (B, C); in training mode the running statistics are updated with
            this batch (mean and unbiased std of the clipped norms) before they are used.
        """
        if self.training:
            with torch.no_grad():
                safe = norms.detach().clamp(0.001, 100.0)
                mean, std = safe.mean(), safe.std() if len(safe) > 1 else torch.zeros(())
                self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * mean)
                self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * std)
        z = self.margin_scaler(norms)
        rows = torch.nonzero(labels >= 0).squeeze(1)
        labels, z = labels[rows], z[rows]
        logits = cosine.clamp(-1 + _ADAFACE_EPS, 1 - _ADAFACE_EPS)
        theta = torch.acos(logits[rows, labels])
        g_ang = -self.margin * z
        g_add = (self.margin + self.margin * z) * self.additive_scale
        new = torch.cos((theta + g_ang).clamp(_ADAFACE_EPS, math.pi - _ADAFACE_EPS)) - g_add
        logits[rows, labels] = new.to(logits.dtype)
        return logits * self.scale


def frabsm_weights(
    ce: torch.Tensor, alpha: float, p0: float = 0.6, mode: str = "sample"
) -> torch.Tensor:
    """FRABSM sample-mining weights I(p) = 1 + alpha * (1 / (1 + e^(p - p0)) - 0.5), p = e^-CE.

    Args:
        ce: per-sample cross-entropy (B,).
        alpha: mining strength.
        p0: pivot probability (0.6).
        mode: ``"sample"`` (one weight per sample) or ``"batch"`` (the release: p from the
            batch-mean CE, one weight for all).
    """
    ce = ce.detach()
    if mode == "batch":
        ce = ce.mean().expand_as(ce)
    elif mode != "sample":
        raise ValueError(f"mode must be 'sample' or 'batch', got {mode!r}")
    p = torch.exp(-ce)
    return 1.0 + alpha * (torch.sigmoid(-(p - p0)) - 0.5)
