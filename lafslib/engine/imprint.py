"""Class centres imprinted from the starting model's embeddings (Qi et al., "Low-Shot Learning
with Imprinted Weights", CVPR 2018).

Each identity's centre starts as the normalised mean of the normalised embeddings of its
training images, so the margin loss starts from a classifier that already agrees with the
backbone instead of from random centres whose early gradients pull a pretrained backbone
apart (with one image per identity the centre is that image's embedding).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from lafslib.engine.finetune_data import faces_on_device

__all__ = ["imprint_centres"]


@torch.no_grad()
def imprint_centres(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    dim: int,
    batch_size: int,
    device: torch.device,
    use_keypoints: bool,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Imprinted centres for every class, and how many images each was averaged over.

    The model embeds in training mode (batch-statistics normalisation, as the margin loss will
    see it); its BatchNorm running statistics are restored afterwards, so imprinting changes
    nothing but the centres. Each rank embeds every ``world_size``-th image from its ``rank``
    (a rank may have none); the per-class sums are summed across ranks.

    Args:
        model: backbone, ``model(x[, keypoints]) -> (B, D)``.
        dataset: yields :class:`~lafslib.engine.finetune_data.FaceTransform` items (uint8
            image, label in [0, num_classes), keypoints, flip).
        num_classes: C.
        dim: D, the embedding size.
        batch_size: images per forward pass.
        device: where the model lives.
        use_keypoints: pass the keypoints to the model (KP-RPE backbones).
        rank, world_size: this process's share of the images.
        num_workers: DataLoader workers.

    Returns:
        centres (C, D), unit rows (zero rows for classes without an image), and counts (C,).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    was_training = model.training
    model.train()
    mine = list(range(rank, len(dataset), world_size))
    # near-equal batches, so no batch holds a single image (batch statistics need two)
    sections = -(-len(mine) // batch_size)
    batches = [b.tolist() for b in np.array_split(mine, sections)] if mine else []
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers)
    sums = torch.zeros(num_classes, dim, device=device)
    counts = torch.zeros(num_classes, device=device)
    try:
        for batch in loader:
            x, y, kp = faces_on_device(batch, device)
            emb = model(x, kp) if use_keypoints else model(x)
            sums.index_add_(0, y, F.normalize(emb.float(), dim=1))
            counts.index_add_(0, y, torch.ones_like(y, dtype=counts.dtype))
    finally:
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
        model.train(was_training)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    return F.normalize(sums, dim=1), counts
