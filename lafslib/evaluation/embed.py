"""Batched face embeddings with the flip test, streamed in bounded memory."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lafslib.landmarks.grid import FLIP_5
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112

__all__ = ["embed_images", "flip_keypoints"]


def flip_keypoints(kp: torch.Tensor) -> torch.Tensor:
    """Horizontally flip (B, 5, 2) normalised keypoints: x -> 1 - x, left/right swapped."""
    out = kp[:, torch.as_tensor(FLIP_5)].clone()
    out[..., 0] = 1.0 - out[..., 0]
    return out


def _needs_keypoints(model: nn.Module) -> bool:
    info = getattr(model, "pretrained_cfg", None)
    return bool(getattr(info, "needs_keypoints", False))


@torch.no_grad()
def embed_images(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int = 128,
    flip: bool = True,
    device: str | torch.device = "cpu",
    keypoints: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embeddings of uint8 images.

    Args:
        model: maps (B, 3, H, W) in [-1, 1] (+ keypoints (B, 5, 2) when
            ``model.pretrained_cfg.needs_keypoints``) to (B, D).
        images: uint8 (N, H, W, 3) RGB.
        batch_size: images per forward pass.
        flip: add the embedding of the horizontally flipped image (flip test).
        device: where the model runs.
        keypoints: (N, 5, 2) in [0, 1]; the ArcFace template when None.
        progress: show a tqdm bar.

    Returns:
        float32 (N, D), not normalised (the protocol normalises after summing).
    """
    from tqdm import tqdm

    device = torch.device(device)
    model = model.eval().to(device)
    use_kp = _needs_keypoints(model)
    n = len(images)
    if use_kp and keypoints is None:
        template = (ARCFACE_TEMPLATE_112 / 112.0).astype(np.float32)
        keypoints = np.broadcast_to(template, (n, 5, 2))
    out: np.ndarray | None = None
    for start in tqdm(range(0, n, batch_size), desc="embed", disable=not progress):
        chunk = torch.from_numpy(np.array(images[start : start + batch_size]))  # own, writable
        x = chunk.to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        kp = None
        if use_kp:
            kp = torch.tensor(
                keypoints[start : start + batch_size], dtype=torch.float32, device=device
            )
        emb = model(x, kp) if use_kp else model(x)
        if flip:
            emb = emb + (model(x.flip(-1), flip_keypoints(kp)) if use_kp else model(x.flip(-1)))
        emb = emb.float().cpu().numpy()
        if out is None:
            out = np.empty((n, emb.shape[1]), dtype=np.float32)
        out[start : start + len(emb)] = emb
    if out is None:
        raise ValueError("no images to embed")
    return out
