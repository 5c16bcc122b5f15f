"""SSL-only scores of a feature on LFW, with the whitening fitted on an unlabelled pool.

Used by ``study_pool.py``: every teacher export (and the two baselines) is scored on all of
``lfw.bin`` (10-fold, flip: the features of a face and of its mirror image are summed) three
ways, none of which uses a label:

- ``raw``: the pooled SSL feature as it comes (what ``lafs eval`` scores);
- ``whitened``: that feature PCA-whitened, fitted on every face of the pool (no shrinkage; the
  map ``lafs eval --whiten`` applies);
- ``wide``: the whole last-layer token grid (7 x 7 x 128 = 6,272 numbers for cpu_small), reduced
  to its top 512 principal components of the pool and whitened with shrinkage 1 (eigenvalues
  ``l -> l + mean l``): the classic whitened-PCA face descriptor of the unpooled backbone.

Raw pixels, the no-learning baseline: ``raw`` the 37,632 pixels, ``whitened`` their top-``dim``
principal components whitened, ``wide`` the pixels average-pooled to 28 x 28 (2,352 numbers),
top 512 components with shrinkage 1; the pixels' principal components come from a seeded
random 6,000 faces of the pool (an N x N Gram matrix of all 28k faces would not fit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ssl_whitening import WIDE_COMPONENTS, WIDE_SHRINK, PooledPixels, score
from torch import nn

from lafslib.evaluation.embed import embed_images
from lafslib.evaluation.whitening import whitening
from lafslib.models import load_export

PIXEL_PCA_FACES = 6000
BATCH = 256


class PooledAndGrid(nn.Module):
    """One forward pass, two readouts: (B, 3, H, W) -> (B, dim + N * width), the export's
    pooled SSL feature followed by its last-layer patch tokens flattened."""

    def __init__(self, export: nn.Module) -> None:
        super().__init__()
        self.backbone = getattr(export, "backbone", export)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        tokens = bb.forward_features(x)
        patches = tokens[:, bb.num_prefix_tokens :].flatten(1)
        pooled = tokens[:, 0] if bb.flatten_pool is None else bb.flatten_pool(patches)
        return torch.cat([pooled, patches], 1)


def fit_map(train: torch.Tensor, components: int, shrink: float) -> tuple[torch.Tensor, ...]:
    """PCA whitening (weight (k, D), bias (k,)) of the rows of ``train`` (N, D), float64."""
    t = train.double()
    return whitening(len(t), t.sum(0), t.T @ t, components, shrink=shrink)


def apply_map(x: np.ndarray, weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    return (torch.from_numpy(x).double() @ weight.T + bias).numpy()


def score_export(
    folder: Path, pool: np.ndarray, lfw: np.ndarray, issame: np.ndarray
) -> dict[str, dict[str, float]]:
    """``raw``, ``whitened`` and ``wide`` scores of an SSL export (see the module docstring).

    Args:
        folder: export folder (``model.json`` with ``feature: ssl``).
        pool: uint8 (N, 112, 112, 3) unlabelled faces the whitening is fitted on.
        lfw: uint8 (2P, 112, 112, 3) LFW pairs as ``load_bin`` gives them.
        issame: (P,) bool.
    """
    export = load_export(folder)
    readout = PooledAndGrid(export).eval()
    with torch.inference_mode():  # the one-pass readout is the export's own feature
        probe = torch.from_numpy(lfw[:4]).permute(0, 3, 1, 2).float() / 127.5 - 1
        dim = export(probe).shape[1]
        torch.testing.assert_close(readout(probe)[:, :dim], export(probe), atol=1e-4, rtol=1e-4)
    mirrored = np.ascontiguousarray(lfw[:, :, ::-1])
    a, b = (embed_images(readout, x, BATCH, flip=False) for x in (lfw, mirrored))
    train = torch.from_numpy(embed_images(readout, pool, BATCH, flip=False))
    white = fit_map(train[:, :dim], dim, 0.0)
    wide = fit_map(train[:, dim:], WIDE_COMPONENTS, WIDE_SHRINK)
    del train
    return {
        "raw": score(a[:, :dim], b[:, :dim], issame),
        "whitened": score(*(apply_map(x[:, :dim], *white) for x in (a, b)), issame),
        "wide": score(*(apply_map(x[:, dim:], *wide) for x in (a, b)), issame),
        "dim": dim,
    }


def score_pixels(
    pool: np.ndarray, lfw: np.ndarray, issame: np.ndarray, dim: int
) -> dict[str, dict[str, float]]:
    """The raw-pixels baseline scored the same three ways; ``dim``: components kept for
    ``whitened`` (the SSL feature's width)."""
    mirrored = np.ascontiguousarray(lfw[:, :, ::-1])
    keep = np.sort(np.random.default_rng(0).choice(len(pool), PIXEL_PCA_FACES, replace=False))
    sample = torch.from_numpy(pool[keep].reshape(len(keep), -1)).double() / 127.5 - 1
    mu = sample.mean(0)
    centred = sample - mu
    values, vectors = torch.linalg.eigh(centred @ centred.T)  # N x N Gram: N << pixels
    project = centred.T @ (vectors[:, -dim:].flip(1) / values[-dim:].flip(0).sqrt())
    del sample, centred

    def components(x: np.ndarray) -> np.ndarray:
        rows = [
            (torch.from_numpy(x[s : s + 1024].reshape(-1, mu.numel())).double() / 127.5 - 1 - mu)
            @ project
            for s in range(0, len(x), 1024)
        ]
        return torch.cat(rows).numpy()

    flat = [x.reshape(len(x), -1).astype(np.float32) / 127.5 - 1 for x in (lfw, mirrored)]
    pooled = PooledPixels()
    train = torch.from_numpy(embed_images(pooled, pool[keep], BATCH, flip=False))
    wide = fit_map(train, WIDE_COMPONENTS, WIDE_SHRINK)
    a, b = (embed_images(pooled, x, BATCH, flip=False) for x in (lfw, mirrored))
    return {
        "raw": score(*flat, issame),
        "whitened": score(components(lfw), components(mirrored), issame),
        "wide": score(apply_map(a, *wide), apply_map(b, *wide), issame),
        "dim": dim,
    }
