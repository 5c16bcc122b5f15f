"""PCA whitening of embeddings, fitted on unlabelled faces (``lafs eval --whiten``).

Cosine similarity of a raw feature is dominated by its strongest directions (brightness,
pose): a random network's feature or the pixels score far better on LFW once whitened. To
judge what a self-supervised feature learned, compare it whitened with whitened baselines
(README, "Study"; Jegou & Chum, ECCV 2012). The same map starts finetuning heads
(:mod:`lafslib.engine.head_init`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Whitened", "fit_whitening", "whitening"]


def whitening(
    count: int,
    total: torch.Tensor,
    outer: torch.Tensor,
    out_features: int,
    shrink: float,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (E, D) and bias (E,) of a linear map that whitens inputs with these moments.

    With mean ``mu``, covariance ``U diag(l) U^T`` (eigenvalues descending) and
    ``l' = l + shrink * mean(l)``, the map is ``x -> Q diag(l'[:k] ** -1/2) U[:, :k]^T (x - mu)``
    with ``k = min(E, D)`` and ``Q`` (E, k) seeded with orthonormal columns: the top ``k``
    principal components, each scaled to (shrunk) unit variance, isometrically lifted to E
    dimensions. ``shrink = 0`` is full whitening; large ``shrink`` tends to a rotation.
    """
    if count < 2:
        raise ValueError(f"whitening needs at least 2 feature vectors, got {count}")
    if shrink < 0:
        raise ValueError(f"whitening shrink must be >= 0, got {shrink}")
    mu = total / count
    cov = outer / count - torch.outer(mu, mu)
    eigenvalues, vectors = torch.linalg.eigh((cov + cov.T) / 2)
    eigenvalues, vectors = eigenvalues.flip(0).clamp_min(0), vectors.flip(1)
    # eigenvectors have no sign: fix it (largest entry positive), so that moments summed in
    # another order (other ranks, other batches) give the same map
    peak = vectors.gather(0, vectors.abs().argmax(0, keepdim=True))
    vectors = vectors * peak.sign()
    k = min(out_features, len(mu))
    scale = (eigenvalues[:k] + shrink * eigenvalues.mean()).clamp_min(1e-12).rsqrt()
    project = vectors[:, :k].T * scale[:, None]  # (k, D)
    gaussian = torch.from_numpy(np.random.default_rng(seed).standard_normal((out_features, k)))
    lift = torch.linalg.qr(gaussian)[0]  # (E, k), orthonormal columns
    weight = lift @ project
    return weight, -weight @ mu


class Whitened(nn.Module):
    """``model`` followed by the affine map ``x -> x W^T + b`` (its embedding whitened)."""

    def __init__(self, model: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float())
        info = getattr(model, "pretrained_cfg", None)
        if dataclasses.is_dataclass(info):
            self.pretrained_cfg = dataclasses.replace(info, embed_dim=int(weight.shape[0]))

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """The model's embedding (B, D) mapped to (B, E)."""
        return self.model(*args, **kwargs) @ self.weight.T + self.bias


@torch.no_grad()
def fit_whitening(
    model: nn.Module,
    folder: str | os.PathLike[str],
    shrink: float = 0.0,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    seed: int = 0,
) -> tuple[Whitened, dict[str, Any]]:
    """``model`` whitened on the embeddings (no flip) of every image under ``folder`` (aligned
    faces of one size, any sub-folder layout, labels unused), or of a ``seed``-ed random
    subset of ``max_images`` of them. Images that cannot be decoded are skipped and counted.
    Returns the whitened model and ``{"folder", "images", "skipped", "shrink"}``."""
    from lafslib.errors import DataError, InputNotFoundError
    from lafslib.evaluation.embed import embed_images
    from lafslib.io import BadImageError, list_images, read_image

    root = Path(folder)
    if not root.is_dir():
        raise InputNotFoundError(f"whitening folder not found: {root}")
    files = list_images(root)
    if max_images is not None and max_images < len(files):
        keep = np.random.default_rng(seed).choice(len(files), max_images, replace=False)
        files = [files[i] for i in sorted(keep)]
    count, skipped, shape = 0, 0, None
    total = outer = None
    for s in range(0, len(files), 1024):
        images = []
        for f in files[s : s + 1024]:
            try:
                img = read_image(root / f)
            except BadImageError:
                skipped += 1
                continue
            shape = shape or img.shape
            if img.shape != shape:
                raise DataError(f"{root / f}: image shape {img.shape} differs from {shape}")
            images.append(img)
        if not images:
            continue
        emb = torch.from_numpy(embed_images(model, np.stack(images), batch_size, False, device))
        emb = emb.double()
        total = emb.sum(0) if total is None else total + emb.sum(0)
        outer = emb.T @ emb if outer is None else outer + emb.T @ emb
        count += len(emb)
    dim = None if total is None else len(total)
    if dim is None or (shrink == 0 and count <= dim):
        raise DataError(
            f"{root}: {count} readable images cannot whiten a {dim or 'model'}-dimensional "
            f"embedding without shrinkage; give more images or --whiten-shrink > 0"
        )
    weight, bias = whitening(count, total, outer, dim, shrink)
    info = {"folder": str(root), "images": count, "skipped": skipped, "shrink": shrink}
    return Whitened(model, weight, bias).eval(), info
