"""Face vision transformers at 112x112 (fViT-style: patch 8, CLS token, learned positions).

The backbone accepts any square token grid: position embeddings are interpolated, so the
same model embeds 14x14 global views and 6x6 local views during DINO/LAFS pretraining.

The ``*_kprpe`` variants add keypoint relative position encoding (KP-RPE, Kim et al., CVPR 2024;
:class:`~lafslib.layers.KPRPE`) to every block; they need ``keypoints`` (B, 5, 2) in [0, 1].
With ``token_centers`` (where each token came from, e.g. LAFS landmark patches) the bias
follows the tokens instead of the grid.

Interface (shared by lafslib backbones):
    ``model(x, keypoints=None, token_centers=None)`` -> embedding ``(B, embed_dim)``;
    ``model.forward_features(x, keypoints=None, token_centers=None)`` -> tokens ``(B, 1+N, D)``;
    ``model.forward_ssl(x, ...)`` -> pooled CLS feature ``(B, ssl_dim)`` for self-supervision.

Example:
    >>> from lafslib.models import create_model
    >>> model = create_model("vit_test")
    >>> model(torch.randn(2, 3, 112, 112)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from timm.layers import DropPath, resample_abs_pos_embed
from torch import nn
from torch.nn import functional as F

from lafslib.layers.attention import Attention
from lafslib.layers.kprpe import KPRPE, run_blocks
from lafslib.models._registry import ModelInfo, register_model

__all__ = ["FaceViT", "Attention", "Block", "init_vit_weights"]


class Block(nn.Module):
    """Pre-norm transformer block (attention + MLP) with stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, head_dim, qkv_bias, scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), bias))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FaceViT(nn.Module):
    """ViT for aligned faces with CLS pooling and a linear + BN embedding head.

    Args:
        img_size: training image size (square).
        patch_size: patch size in pixels.
        dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_dim: MLP hidden width.
        head_dim: width per head (default dim // num_heads).
        embed_dim: output embedding size.
        drop_path: stochastic depth rate (linearly increasing over blocks).
        attn_scale: attention logit scale; None uses head_dim ** -0.5 (LAFS used dim ** -0.5).
        ssl_pool: the pooled feature of :meth:`forward_ssl` (and so of the embedding head):
            ``"cls"`` (the normed CLS token) or ``"flatten"`` (a linear map of all patch tokens
            in grid order, as insightface's face ViT pools; keeps the spatial layout of an
            aligned face, but needs the full ``img_size`` grid).
        kprpe: add KP-RPE biases to every block (then ``keypoints`` are required).
        kprpe_variant: KP-RPE context sharing (see :class:`~lafslib.layers.KPRPE`).
        num_keypoints: keypoints per face for KP-RPE.
        pos_interp: how the position embedding is resampled to another token grid (local
            views): ``"exact"`` (timm's ``resample_abs_pos_embed``: bicubic onto exactly the
            new grid; the default) or ``"dino"`` (facebookresearch/dino's
            ``interpolate_pos_encoding``: bicubic with the scale factor ``(g + 0.1) / G``,
            which samples slightly inside the exact grid's positions; for parity with DINO
            checkpoints and training runs). Both are equal on the training grid.
    """

    ssl_unused: tuple[str, ...] = ("head",)
    """Modules ``forward`` uses and ``forward_ssl`` never reaches (pretraining leaves them
    out of the optimizer and the teacher's EMA)."""

    def __init__(
        self,
        img_size: int = 112,
        patch_size: int = 8,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        head_dim: int | None = None,
        embed_dim: int = 512,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        attn_scale: float | None = None,
        kprpe: bool = False,
        kprpe_variant: str = "splithead_unshared",
        num_keypoints: int = 5,
        ssl_pool: str = "cls",
        pos_interp: str = "exact",
    ) -> None:
        super().__init__()
        if ssl_pool not in ("cls", "flatten"):
            raise ValueError(f"ssl_pool must be 'cls' or 'flatten', got {ssl_pool!r}")
        if pos_interp not in ("exact", "dino"):
            raise ValueError(f"pos_interp must be 'exact' or 'dino', got {pos_interp!r}")
        self.pos_interp = pos_interp
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.dim = dim
        self.ssl_dim = dim
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, dim))
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_dim, head_dim, qkv_bias, r, attn_scale) for r in rates
        )
        self.norm = nn.LayerNorm(dim)
        self.ssl_pool = ssl_pool
        self.flatten_pool = nn.Linear(self.grid**2 * dim, dim) if ssl_pool == "flatten" else None
        self.head = nn.Sequential(nn.Linear(dim, embed_dim), nn.BatchNorm1d(embed_dim))
        self.kprpe = (
            KPRPE(
                num_heads,
                depth,
                num_keypoints,
                kprpe_variant,
                num_prefix_tokens=self.num_prefix_tokens,
            )
            if kprpe
            else None
        )
        self.grad_checkpointing = False
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)
        if self.kprpe is not None:
            self.kprpe.reset_parameters()  # zero init: starts as the plain ViT
        self.pretrained_cfg = ModelInfo(
            name="FaceViT",
            input_size=(3, img_size, img_size),
            needs_keypoints=kprpe,
            num_keypoints=num_keypoints,
            embed_dim=embed_dim,
        )

    def _pos_embed(self, grid: int) -> torch.Tensor:
        """Position embeddings (1, 1 + grid**2, dim) for a ``grid`` x ``grid`` token grid."""
        if grid == self.grid:
            return self.pos_embed
        if self.pos_interp == "dino":
            patches = rearrange(self.pos_embed[:, 1:], "1 (h w) d -> 1 d h w", h=self.grid)
            scale = (grid + 0.1) / self.grid  # DINO's offset: the output is still grid x grid
            patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic")
            patches = rearrange(patches, "1 d h w -> 1 (h w) d")
            return torch.cat([self.pos_embed[:, :1], patches], dim=1)
        return resample_abs_pos_embed(
            self.pos_embed,
            [grid, grid],
            [self.grid, self.grid],
            num_prefix_tokens=1,
            antialias=False,
        )

    def forward_features(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens after the final norm.

        Args:
            x: images (B, 3, H, W) in [-1, 1]; H = W = grid * patch_size for any grid.
            keypoints: (B, K, 2) in [0, 1] as (x, y); required by KP-RPE models, else unused.
            token_centers: (B, N, 2) in [0, 1]: where each token came from (source-image
                coordinates); KP-RPE then uses them instead of the grid. Unused without KP-RPE.

        Returns:
            (B, 1 + N, dim), CLS first.
        """
        if x.shape[-1] != x.shape[-2] or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"FaceViT expects square inputs divisible by {self.patch_size}, got {tuple(x.shape)}"
            )
        tokens = rearrange(self.patch_embed(x), "b d h w -> b (h w) d")
        grid = x.shape[-1] // self.patch_size
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self._pos_embed(grid)
        rpe = (
            None
            if self.kprpe is None
            else self.kprpe.model_bias(keypoints, token_centers, grid, self.grid)
        )
        tokens = run_blocks(self.blocks, tokens, rpe, self.grad_checkpointing and self.training)
        return self.norm(tokens)

    def forward_ssl(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled feature (B, dim) for self-supervised heads: the normed CLS token, or with
        ``ssl_pool="flatten"`` a linear map of every patch token."""
        tokens = self.forward_features(x, keypoints, token_centers)
        if self.flatten_pool is None:
            return tokens[:, 0]
        if tokens.shape[1] != 1 + self.grid**2:
            raise ValueError(
                f"ssl_pool='flatten' needs the full {self.grid}x{self.grid} token grid, got "
                f"{tokens.shape[1] - 1} tokens (use global views or grid-layout local views, or ssl_pool='cls')"
            )
        return self.flatten_pool(tokens[:, 1:].flatten(1))

    def forward(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Face embedding (B, embed_dim); see :meth:`forward_features` for the arguments."""
        return self.head(self.forward_ssl(x, keypoints, token_centers))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay."""
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style layer groups (stem, blocks, head) for layer-wise LR decay."""
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed|^kprpe",
            "blocks": r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None)],
            "head": r"^norm|^flatten_pool|^head",
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        self.grad_checkpointing = enable


def init_vit_weights(m: nn.Module) -> None:
    """ViT initialisation for ``model.apply``: truncated normal (std 0.02) linear weights, zero
    biases (layer norms keep their ones / zeros)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _build(kwargs: dict[str, Any], **defaults: Any) -> FaceViT:
    defaults.update(kwargs)
    return FaceViT(**defaults)


@register_model
def vit_test(**kwargs: Any) -> FaceViT:
    """Tiny ViT for tests and demos (dim 64, depth 2)."""
    return _build(kwargs, dim=64, depth=2, num_heads=4, mlp_dim=128, embed_dim=64)


@register_model
def vit_tiny(**kwargs: Any) -> FaceViT:
    """ViT-Ti-sized face ViT (dim 192, depth 12, 3 heads), patch 8."""
    return _build(kwargs, dim=192, depth=12, num_heads=3, mlp_dim=768)


@register_model
def vit_small(**kwargs: Any) -> FaceViT:
    """ViT-S-sized face ViT (dim 384, depth 12, 6 heads), patch 8."""
    return _build(kwargs, dim=384, depth=12, num_heads=6, mlp_dim=1536)


@register_model
def vit_base(**kwargs: Any) -> FaceViT:
    """ViT-B-sized face ViT (dim 768, depth 12, 12 heads), patch 8."""
    return _build(kwargs, dim=768, depth=12, num_heads=12, mlp_dim=3072)


@register_model
def fvit_base(**kwargs: Any) -> FaceViT:
    """LAFS fViT: dim 768, depth 12, 11 heads of 64, MLP 2048, attention scale dim ** -0.5."""
    return _build(
        kwargs,
        dim=768,
        depth=12,
        num_heads=11,
        head_dim=64,
        mlp_dim=2048,
        attn_scale=768**-0.5,
    )


@register_model
def fvit_test(**kwargs: Any) -> FaceViT:
    """Tiny fViT geometry for tests (dim 64, depth 2, 3 heads of 16)."""
    return _build(
        kwargs,
        dim=64,
        depth=2,
        num_heads=3,
        head_dim=16,
        mlp_dim=96,
        embed_dim=64,
        attn_scale=64**-0.5,
    )


@register_model
def vit_test_kprpe(**kwargs: Any) -> FaceViT:
    """Tiny ViT with KP-RPE for tests and demos (dim 64, depth 2, 4 heads)."""
    return _build(kwargs, dim=64, depth=2, num_heads=4, mlp_dim=128, embed_dim=64, kprpe=True)


@register_model
def vit_small_kprpe(**kwargs: Any) -> FaceViT:
    """ViT-S-sized face ViT with KP-RPE (splithead_unshared), patch 8."""
    return _build(kwargs, dim=384, depth=12, num_heads=6, mlp_dim=1536, kprpe=True)


@register_model
def vit_base_kprpe(**kwargs: Any) -> FaceViT:
    """ViT-B-sized face ViT with KP-RPE (splithead_unshared), patch 8."""
    return _build(kwargs, dim=768, depth=12, num_heads=12, mlp_dim=3072, kprpe=True)
