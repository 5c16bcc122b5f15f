"""Keypoint relative position encoding (KP-RPE) as an additive attention bias.

Kim, Su, Liu, Jain, Liu, "KeyPoint Relative Position Encoding for Face Recognition", CVPR 2024.
The semantics follow CVLFace's ``vit_kprpe`` (``KPRPE_shared``, ``rpe_on=k``, ``mode=ctx``,
``method=product``, ``ratio=1.9``), so its checkpoints reproduce their outputs:

- token centre ``p_i = (x, y)`` in [0, 1] (patch centres of a row-major grid), keypoints
  ``K`` (B, K, 2) in [0, 1] as (x, y); relative feature ``r_i = concat_k (p_i - K_k)`` (2K values,
  ``(dx_1, dy_1, dx_2, ...)``), computed without gradient into the keypoints;
- context ``C = Linear(2K -> nb * H * L)(r_i)``, zero-initialised, split per layer and head
  (``splithead_unshared``; ``shared``, ``unshared`` and ``splithead`` share it across heads and/or
  layers);
- iRPE "product" buckets (Wu et al., ICCV 2021): per axis ``idx(d) = round(d)`` if
  ``|d| <= alpha`` else ``sign(d) * min(beta, round(alpha + ln(|d| / alpha) / ln(gamma / alpha)
  * (beta - alpha)))`` truncated to an integer, with ``alpha, beta, gamma = ratio * (1, 2, 8)``;
  ``psi(i, j) = (idx(row_i - row_j) + 3) * 7 + idx(col_i - col_j) + 3`` (49 buckets for 1.9);
- bias ``A[b, h, i, j] = C^(l)[b, h, i, psi(i, j)]`` added to the attention logits of layer l.

The bias of a layer is one ``torch.gather`` of the small context ``(B, H, N, nb)`` on a cached
``(N, N)`` bucket index (broadcast over batch and heads), so forward and backward stay cheap
(CVLFace's pure-PyTorch path gathers with a flattened ``(N * N,)`` advanced index instead).

Beyond the grid: ``token_centers`` (B, N, 2) places every token at its own position (e.g. the
landmarks LAFS sampled its patches at). Relative features then use those centres, and the
pairwise offsets are measured in patch units of ``grid_size`` and bucketed by the same function;
with the grid's own centres this is exactly the grid case.

Example (adding KP-RPE to a ViT whose attention accepts an additive bias):
    >>> rpe = KPRPE(num_heads=4, depth=2)
    >>> kp = torch.rand(2, 5, 2)
    >>> bias = rpe(kp, grid_size=14)  # lazily gathered per layer
    >>> bias[0].shape  # layer 0: added to the (B, H, N, N) attention logits
    torch.Size([2, 4, 196, 196])
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "KPRPE",
    "KPRPEBias",
    "KPRPE_VARIANTS",
    "piecewise_index",
    "product_bucket_ids",
    "grid_bucket_ids",
    "kprpe_grid_centers",
    "relative_keypoints",
    "run_blocks",
]

KPRPE_VARIANTS = ("shared", "unshared", "splithead", "splithead_unshared")


def piecewise_index(d: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """iRPE piecewise index of relative distances (Wu et al., ICCV 2021, Eq. 18).

    Args:
        d: relative distances of any shape (integer or float, e.g. patch-unit offsets).
        alpha, beta, gamma: coefficients (``ratio * (1, 2, 8)``).

    Returns:
        Long tensor of ``d``'s shape with values in ``[-int(beta), int(beta)]``.
    """
    d = d.to(torch.float64)
    mag = d.abs()
    far = alpha + torch.log(mag.clamp_min(alpha) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    # clip at beta *before* the integer cast, then truncate towards zero, as iRPE does
    far = torch.sign(d) * far.round().clamp(max=beta)
    return torch.where(mag <= alpha, d.round(), far).to(torch.long)


def product_bucket_ids(
    d_row: torch.Tensor, d_col: torch.Tensor, ratio: float = 1.9
) -> torch.Tensor:
    """iRPE "product" bucket of 2-D offsets: ``(idx(d_row) + b) * (2b + 1) + idx(d_col) + b``.

    Args:
        d_row, d_col: row (y) and column (x) offsets ``pos_i - pos_j`` in patch units.
        ratio: iRPE ratio (alpha, beta, gamma = ratio * (1, 2, 8)).

    Returns:
        Long tensor of bucket indices in ``[0, (2b + 1) ** 2)``, ``b = int(2 * ratio)``.
    """
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    b = int(beta)
    rows = piecewise_index(d_row, alpha, beta, gamma) + b
    cols = piecewise_index(d_col, alpha, beta, gamma) + b
    return rows * (2 * b + 1) + cols


def num_product_buckets(ratio: float = 1.9) -> int:
    """Number of "product" buckets: ``(2 * int(2 * ratio) + 1) ** 2`` (49 for 1.9)."""
    return (2 * int(2 * ratio) + 1) ** 2


def _grid_bucket_ids(height: int, width: int, ratio: float, prefix: int) -> torch.Tensor:
    rows = torch.arange(height).repeat_interleave(width)  # (N,) row of token i
    cols = torch.arange(width).repeat(height)
    ids = product_bucket_ids(rows[:, None] - rows[None], cols[:, None] - cols[None], ratio)
    if prefix:
        # prefix tokens (CLS, registers) use one extra bucket whose context is zero
        ids = nn.functional.pad(ids, (prefix, 0, prefix, 0), value=num_product_buckets(ratio))
    return ids


_grid_bucket_ids_cpu = lru_cache(maxsize=32)(_grid_bucket_ids)


def grid_bucket_ids(
    height: int,
    width: int,
    ratio: float = 1.9,
    num_prefix_tokens: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bucket index ``psi(i, j)`` of a row-major ``height x width`` grid, cached per size.

    Args:
        height, width: patch grid.
        ratio: iRPE ratio.
        num_prefix_tokens: leading tokens without a position; their rows and columns get the
            extra bucket ``nb`` (whose context :class:`KPRPE` keeps at zero).
        device: device of the returned tensor.

    Returns:
        Long tensor (P + N, P + N) with ``N = height * width``, ``P = num_prefix_tokens``.
    """
    # under torch.compile / torch.export the ops are traced: a tensor cached there would be a
    # fake one (a model run once before export has real cached indices, exported as constants)
    build = _grid_bucket_ids if torch.compiler.is_compiling() else _grid_bucket_ids_cpu
    ids = build(int(height), int(width), float(ratio), int(num_prefix_tokens))
    return ids.to(device) if device is not None else ids


def kprpe_grid_centers(
    height: int,
    width: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Patch centres (N, 2) as (x, y) in [0, 1], row-major, computed as CVLFace does.

    Args:
        height, width: patch grid.
        device, dtype: of the result.
    """
    ys = torch.linspace(0, 1, height + 1, device=device, dtype=dtype)
    xs = torch.linspace(0, 1, width + 1, device=device, dtype=dtype)
    ys, xs = (ys[:-1] + ys[1:]) / 2, (xs[:-1] + xs[1:]) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(-1, 2)


def relative_keypoints(keypoints: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Relative keypoint features ``r_i = concat_k (p_i - K_k)`` (no gradient into either).

    Args:
        keypoints: (B, K, 2) as (x, y) in [0, 1].
        centers: token centres (N, 2) or (B, N, 2) as (x, y) in [0, 1].

    Returns:
        (B, N, 2K) ordered ``(dx_1, dy_1, dx_2, dy_2, ...)``.
    """
    keypoints, centers = keypoints.detach(), centers.detach()
    diff = centers.unsqueeze(-2) - keypoints.unsqueeze(-3)  # (B, N, K, 2)
    return diff.flatten(-2)


class KPRPEBias:
    """Per-layer KP-RPE attention biases, gathered lazily from a shared context.

    ``bias[l]`` is the (B, H or 1, T, T) additive logit bias of layer ``l`` (T = P + N tokens).
    """

    def __init__(self, context: torch.Tensor, index: torch.Tensor, depth: int) -> None:
        self.context = context  # (B, L or 1, H or 1, T, nb + 1)
        self.index = index  # (1 or B, 1, T, T)
        self.depth = depth

    def __len__(self) -> int:
        return self.depth

    def __getitem__(self, layer: int) -> torch.Tensor:
        if not -self.depth <= layer < self.depth:
            raise IndexError(f"layer {layer} out of range for depth {self.depth}")
        ctx = self.context[:, layer % self.depth if self.context.shape[1] > 1 else 0]
        b, h, t, _ = ctx.shape
        return torch.gather(ctx, 3, self.index.expand(b, h, t, t))


class KPRPE(nn.Module):
    """Keypoint relative position encoding: keypoint-conditioned iRPE biases for every layer.

    Args:
        num_heads: attention heads H.
        depth: number of transformer layers L.
        num_keypoints: keypoints K per face.
        variant: ``"splithead_unshared"`` (one context per layer and head, CVLFace's default),
            ``"splithead"`` (per head, shared by layers), ``"unshared"`` (per layer, shared by
            heads) or ``"shared"``.
        ratio: iRPE bucket ratio (49 "product" buckets for 1.9).
        num_prefix_tokens: leading tokens without a position (CLS); their bias is zero.

    Example:
        >>> rpe = KPRPE(num_heads=8, depth=12)
        >>> biases = rpe(torch.rand(4, 5, 2), grid_size=14)
        >>> len(biases), biases[3].shape
        (12, torch.Size([4, 8, 196, 196]))
    """

    def __init__(
        self,
        num_heads: int,
        depth: int,
        num_keypoints: int = 5,
        variant: str = "splithead_unshared",
        ratio: float = 1.9,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        if variant not in KPRPE_VARIANTS:
            raise ValueError(f"unknown KP-RPE variant {variant!r}; choose one of {KPRPE_VARIANTS}")
        self.num_heads = num_heads
        self.depth = depth
        self.num_keypoints = num_keypoints
        self.variant = variant
        self.ratio = ratio
        self.num_prefix_tokens = num_prefix_tokens
        self.num_buckets = num_product_buckets(ratio)
        self.context_heads = num_heads if variant.startswith("splithead") else 1
        self.context_layers = depth if variant.endswith("unshared") else 1
        out = self.num_buckets * self.context_heads * self.context_layers
        self.linear = nn.Linear(2 * num_keypoints, out)
        self.reset_parameters()
        self._index_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def reset_parameters(self) -> None:
        """Zero the projection: the bias starts at zero (the model equals its plain ViT)."""
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, depth={self.depth}, variant={self.variant!r}, "
            f"num_buckets={self.num_buckets}, num_prefix_tokens={self.num_prefix_tokens}"
        )

    def _grid_index(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, device)
        index = self._index_cache.get(key)
        if index is None:
            ids = grid_bucket_ids(height, width, self.ratio, self.num_prefix_tokens, device)
            if torch.compiler.is_compiling():  # traced ops: never cache a tensor made there
                return ids[None, None]
            index = self._index_cache[key] = ids[None, None]
        return index

    @torch.no_grad()
    def center_bucket_ids(
        self, token_centers: torch.Tensor, grid_size: tuple[int, int]
    ) -> torch.Tensor:
        """Bucket index (B, P + N, P + N) of tokens at arbitrary centres.

        Args:
            token_centers: (B, N, 2) as (x, y) in [0, 1].
            grid_size: (rows, cols) defining the patch unit (1 / rows, 1 / cols).
        """
        gh, gw = grid_size
        c = token_centers.to(torch.float64)
        d_row = (c[:, :, None, 1] - c[:, None, :, 1]) * gh
        d_col = (c[:, :, None, 0] - c[:, None, :, 0]) * gw
        ids = product_bucket_ids(d_row, d_col, self.ratio)
        p = self.num_prefix_tokens
        if p:
            ids = nn.functional.pad(ids, (p, 0, p, 0), value=self.num_buckets)
        return ids

    def model_bias(
        self,
        keypoints: torch.Tensor | None,
        token_centers: torch.Tensor | None,
        grid: int,
        train_grid: int,
    ) -> KPRPEBias:
        """The biases a ViT needs for an input of ``grid x grid`` patches: the grid's own when
        no ``token_centers`` are given, else tokens at their positions with offsets in patch
        units of the ``train_grid`` the model was built for. Errors name what is missing."""
        if keypoints is None:
            raise ValueError(
                "this ViT uses KP-RPE and needs keypoints (B, "
                f"{self.num_keypoints}, 2) in [0, 1]: call model(x, keypoints)"
            )
        if token_centers is None:
            return self(keypoints, grid)
        if token_centers.shape[1] != grid * grid:
            raise ValueError(
                f"token_centers has {token_centers.shape[1]} tokens, the image {grid * grid}"
            )
        return self(keypoints, train_grid, token_centers)

    def forward(
        self,
        keypoints: torch.Tensor,
        grid_size: int | tuple[int, int],
        token_centers: torch.Tensor | None = None,
    ) -> KPRPEBias:
        """Per-layer attention biases for a batch of faces.

        Args:
            keypoints: (B, K, 2) as (x, y) in [0, 1] (no gradient flows into them).
            grid_size: patch grid (rows, cols) or its side. Without ``token_centers`` the
                tokens are that grid's patches; with them it sets the patch unit of the offsets.
            token_centers: optional (B, N, 2) per-sample token positions as (x, y) in [0, 1].

        Returns:
            :class:`KPRPEBias`; ``bias[l]`` is (B, H or 1, P + N, P + N).
        """
        if keypoints.ndim != 3 or keypoints.shape[1:] != (self.num_keypoints, 2):
            raise ValueError(
                f"keypoints must be (B, {self.num_keypoints}, 2), got {tuple(keypoints.shape)}"
            )
        gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
        dtype = self.linear.weight.dtype
        if token_centers is None:
            centers = kprpe_grid_centers(gh, gw, keypoints.device, keypoints.dtype)
            index = self._grid_index(gh, gw, keypoints.device)
        else:
            if token_centers.ndim != 3 or token_centers.shape[0] != keypoints.shape[0]:
                raise ValueError(
                    f"token_centers must be (B, N, 2) with B={keypoints.shape[0]}, "
                    f"got {tuple(token_centers.shape)}"
                )
            centers = token_centers
            index = self.center_bucket_ids(token_centers, (gh, gw))[:, None]
        rel = relative_keypoints(keypoints, centers).to(dtype)
        if rel.shape[0] != keypoints.shape[0]:
            rel = rel.expand(keypoints.shape[0], -1, -1)
        # (B, N, L * H * nb) -> (B, L, H, N, nb)
        ctx = rearrange(
            self.linear(rel),
            "b n (l h k) -> b l h n k",
            l=self.context_layers,
            h=self.context_heads,
        )
        # zero context for prefix tokens and a zero extra bucket for their rows and columns
        ctx = nn.functional.pad(ctx, (0, 1, self.num_prefix_tokens, 0)).contiguous()
        return KPRPEBias(ctx, index, self.depth)


def run_blocks(
    blocks: nn.ModuleList, tokens: torch.Tensor, rpe: KPRPEBias | None, checkpointed: bool
) -> torch.Tensor:
    """Transformer blocks in turn on (B, N, dim) tokens, block ``i`` with the KP-RPE bias
    ``rpe[i]`` (None: plain attention); ``checkpointed`` recomputes each block, its bias gather
    included, in the backward pass (activation checkpointing)."""
    for i, blk in enumerate(blocks):
        if checkpointed:
            tokens = checkpoint(_run_block, blk, tokens, rpe, i, use_reentrant=False)
        else:
            tokens = _run_block(blk, tokens, rpe, i)
    return tokens


def _run_block(blk: nn.Module, x: torch.Tensor, rpe: KPRPEBias | None, i: int) -> torch.Tensor:
    return blk(x, None if rpe is None else rpe[i])
