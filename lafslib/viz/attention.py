"""Attention maps of face ViTs, per layer and head, drawn over the face.

Works with every backbone built on :class:`lafslib.layers.attention.Attention` (face ViTs with
or without KP-RPE, CVLFace ViTs, the transformer of Part fViT). The maps come from the manual
attention path (``keep_attention``). What is drawn per head: the attention of the CLS token to
every patch token, or, for models without a CLS token, the attention each token receives
(averaged over queries). Grid tokens are drawn as a heat map; landmark-patch tokens (Part fViT)
as dots at the landmarks they were sampled at.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lafslib.layers.attention import Attention

__all__ = ["attention_maps", "token_scores", "plot_attention"]


@torch.no_grad()
def attention_maps(
    model: nn.Module, images: torch.Tensor, keypoints: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Run ``model`` once and collect the attention of every layer.

    Args:
        model: a backbone whose blocks use :class:`~lafslib.layers.attention.Attention`.
        images: (B, 3, H, W) in [-1, 1].
        keypoints: (B, K, 2) in [0, 1] for KP-RPE models.

    Returns:
        Per layer a (B, heads, T, T) tensor (T tokens, prefix tokens first), and the token
        positions (B, N, 2) in [0, 1] when the model samples its tokens at landmarks (Part fViT),
        else None.
    """
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no lafslib attention layers to read")
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.keep_attention = True
    try:
        needs_kp = getattr(getattr(model, "pretrained_cfg", None), "needs_keypoints", False)
        model(images, keypoints) if needs_kp or keypoints is not None else model(images)
        maps = [layer.last_attention.detach().float().cpu() for layer in layers]
    finally:
        for layer in layers:
            layer.keep_attention = False
            layer.last_attention = None
        model.train(was_training)
    positions = getattr(model, "last_landmarks", None)
    return maps, None if positions is None else positions.detach().float().cpu()


def token_scores(maps: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """(B, heads, T, T) attention -> (B, heads, N) weight of each non-prefix token: the CLS
    token's attention to it, or the attention it receives (mean over queries) without CLS."""
    if num_prefix_tokens > 0:
        return maps[:, :, 0, num_prefix_tokens:]
    return maps.mean(dim=2)


def _prefix_tokens(model: nn.Module) -> int:
    inner = getattr(model, "vit", model)
    return int(getattr(inner, "num_prefix_tokens", 0))


def plot_attention(
    model: nn.Module,
    image: np.ndarray,
    out: str | os.PathLike[str],
    keypoints: np.ndarray | None = None,
    layers: list[int] | None = None,
) -> Path:
    """Draw the attention of every head of the chosen layers over one face to a PNG.

    Args:
        model: the backbone (see :func:`attention_maps`).
        image: uint8 (S, S, 3) aligned face at the model's input size.
        out: PNG path; rows are layers, columns the face then each head.
        keypoints: (K, 2) pixel keypoints for KP-RPE models (drawn on the face too).
        layers: layer indices (default: all).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = image.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    kp = None if keypoints is None else torch.as_tensor(keypoints, dtype=torch.float32)[None] / size
    maps, positions = attention_maps(model, x, kp)
    chosen = list(range(len(maps))) if layers is None else layers
    bad = [i for i in chosen if not -len(maps) <= i < len(maps)]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {len(maps)} layers")
    prefix = _prefix_tokens(model)
    heads = maps[0].shape[1]
    fig, axes = plt.subplots(
        len(chosen), heads + 1, figsize=(1.6 * (heads + 1), 1.6 * len(chosen)), squeeze=False
    )
    for row, li in enumerate(chosen):
        scores = token_scores(maps[li], prefix)[0]  # (heads, N)
        n = scores.shape[-1]
        axes[row, 0].imshow(image)
        if keypoints is not None:
            axes[row, 0].scatter(keypoints[:, 0], keypoints[:, 1], s=6, c="cyan")
        axes[row, 0].set_ylabel(f"layer {li % len(maps)}", fontsize=7)
        for h in range(heads):
            ax = axes[row, h + 1]
            ax.imshow(image, alpha=0.55)
            s = scores[h].numpy()
            if positions is not None:
                pts = positions[0].numpy() * size
                ax.scatter(pts[:, 0], pts[:, 1], s=8, c=s, cmap="inferno")
            else:
                g = math.isqrt(n)
                if g * g != n:
                    raise ValueError(f"cannot lay {n} tokens on a square grid")
                ax.imshow(s.reshape(g, g), cmap="inferno", alpha=0.6, extent=(0, size, size, 0))
            if row == 0:
                ax.set_title(f"head {h}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
