"""Batched face embeddings with the flip test, streamed in bounded memory.

On the CPU, a batch's activations are large (a MobileFaceNet at batch 128: ~100 MiB each), above
glibc's largest ``mmap`` threshold (32 MiB): every one is then mapped fresh from the kernel,
zero-filled page by page and unmapped when freed, so each batch pays its whole activation memory
in page faults (measured: ~10,000 minor faults and half of the CPU time as system time per image).
:func:`reuse_freed_memory` makes glibc serve them from its heap and keep freed memory for the
next batch while embedding (``mallopt``; a no-op elsewhere), which removes that cost at any
batch size. Smaller batches would avoid it too, but cost more in thread synchronisation.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from lafslib.landmarks.grid import FLIP_5
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112

__all__ = ["embed_images", "flip_keypoints", "reuse_freed_memory"]

# glibc's mallopt parameters and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """While inside, glibc allocates large blocks from its heap instead of fresh ``mmap`` pages
    and keeps freed memory for reuse (``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD`` unbounded); on
    leaving, its defaults come back and the freed memory is returned to the system
    (``malloc_trim``). Nested and concurrent uses restore once, at the last exit. Does nothing
    where the C library is not glibc."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
                libc.malloc_trim(0)


def flip_keypoints(kp: torch.Tensor) -> torch.Tensor:
    """Horizontally flip (B, 5, 2) normalised keypoints: x -> 1 - x, left/right swapped."""
    out = kp[:, torch.as_tensor(FLIP_5)].clone()
    out[..., 0] = 1.0 - out[..., 0]
    return out


def _needs_keypoints(model: nn.Module) -> bool:
    info = getattr(model, "pretrained_cfg", None)
    return bool(getattr(info, "needs_keypoints", False))


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
    device = torch.device(device)
    heap = reuse_freed_memory() if device.type == "cpu" else contextlib.nullcontext()
    with heap, torch.no_grad():
        return _embed(model, images, batch_size, flip, device, keypoints, progress)


def _embed(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int,
    flip: bool,
    device: torch.device,
    keypoints: np.ndarray | None,
    progress: bool,
) -> np.ndarray:
    from tqdm import tqdm

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
