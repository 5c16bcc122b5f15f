"""Embedding head initialised by PCA whitening of its input on the training images.

A pretrained backbone comes with a feature but no embedding head: the finetuning model's head
(Linear + BatchNorm on the pooled feature) starts random. A random projection followed by
per-dimension standardisation changes the geometry of the feature, so finetuning starts below
the accuracy the pretrained feature has on its own (cpu_small LAFS teacher on LFW: 72.3% as an
SSL feature, 70.9% through a random head). Whitening the head's input instead (principal
directions scaled to unit variance, with shrinkage towards the mean eigenvalue, then an
orthonormal lift to the embedding size) starts finetuning from the decorrelated feature, the
usual post-processing of self-supervised features for retrieval (e.g. DINO's copy detection,
Caron et al., ICCV 2021; Jegou & Chum, ECCV 2012). It needs no labels.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lafslib.engine.finetune_data import faces_on_device
from lafslib.errors import ConfigError
from lafslib.evaluation.whitening import whitening

__all__ = [
    "HEADS",
    "MAX_WHITEN_DIM",
    "embedding_linear",
    "head_input_moments",
    "whiten_head",
]

MAX_WHITEN_DIM = 4096  # a (D, D) covariance in float64; larger inputs are refused
HEADS = ("head", "vit.head", "feature", "fc")  # FaceViT, Part fViT, CVLFace ViT, IResNet


def embedding_linear(model: nn.Module) -> nn.Linear:
    """The first ``nn.Linear`` of the model's embedding head (the first of :data:`HEADS` it
    has): the layer whose input is whitened."""
    linear = None
    for path in HEADS:
        try:
            head = model.get_submodule(path)
        except AttributeError:
            continue
        linear = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
        break
    if linear is None:
        raise ConfigError(
            f"adapter.head_init=whiten: {type(model).__name__} has no linear embedding head "
            f"(an nn.Linear in one of {', '.join(HEADS)}); use adapter.head_init=random"
        )
    if linear.in_features > MAX_WHITEN_DIM:
        raise ConfigError(
            f"adapter.head_init=whiten: the embedding head's input has {linear.in_features} "
            f"features, more than {MAX_WHITEN_DIM} (its covariance would not fit); use "
            f"adapter.head_init=random"
        )
    return linear


@torch.no_grad()
def head_input_moments(
    model: nn.Module,
    linear: nn.Linear,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    use_keypoints: bool,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Count, sum (D,) and sum of outer products (D, D), float64 on the CPU, of the inputs of
    ``linear`` over the dataset, the model in evaluation mode (as it embeds for evaluation).

    Each rank embeds every ``world_size``-th image from its ``rank``; the moments are summed
    across ranks, so every rank gets the same result.
    """
    d = linear.in_features
    moments = torch.zeros(1 + d + d * d, dtype=torch.float64, device=device)
    count, total = moments[:1], moments[1 : 1 + d]
    outer = moments[1 + d :].view(d, d)

    def capture(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().reshape(-1, d).double()
        count.add_(len(x))
        total.add_(x.sum(0))
        outer.add_(x.T @ x)

    was_training = model.training
    model.eval()
    hook = linear.register_forward_pre_hook(capture)
    mine = list(range(rank, len(dataset), world_size))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, mine), batch_size=batch_size, num_workers=num_workers
    )
    try:
        for batch in loader:
            x, _, kp = faces_on_device(batch, device)
            model(x, kp) if use_keypoints else model(x)
    finally:
        hook.remove()
        model.train(was_training)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(moments)
    return int(count.item()), total.cpu(), outer.cpu()


def whiten_head(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    use_keypoints: bool,
    shrink: float,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> int:
    """Set the embedding head's first Linear to the whitening of its input over ``dataset``
    (:func:`whitening`); returns how many images it was fitted on."""
    linear = embedding_linear(model)
    count, total, outer = head_input_moments(
        model, linear, dataset, batch_size, device, use_keypoints, rank, world_size, num_workers
    )
    if shrink == 0 and count <= linear.in_features:
        raise ConfigError(
            f"adapter.head_init=whiten: {count} images cannot whiten {linear.in_features} "
            f"features without shrinkage; set adapter.whiten_shrink > 0"
        )
    weight, bias = whitening(count, total, outer, linear.out_features, shrink, seed)
    with torch.no_grad():
        linear.weight.copy_(weight.to(linear.weight))
        if linear.bias is not None:  # without one, the BatchNorm after it centres
            linear.bias.copy_(bias.to(linear.bias))
    return count
