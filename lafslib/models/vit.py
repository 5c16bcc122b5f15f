"""Face vision transformers at 112x112 (fViT-style: patch 8, CLS token, learned positions).

The backbone accepts any square token grid: position embeddings are interpolated, so the
same model embeds 14x14 global views and 6x6 local views during DINO/LAFS pretraining.

Interface (shared by lafslib backbones):
    ``model(x, keypoints=None)`` -> embedding ``(B, embed_dim)``;
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
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

from lafslib.models._registry import ModelInfo, register_model

__all__ = ["FaceViT", "Attention", "Block"]


class Attention(nn.Module):
    """Multi-head self-attention with an optional additive bias; fused (SDPA) or manual path.

    Args:
        dim: token width.
        num_heads: heads.
        head_dim: width per head (default dim // num_heads).
        qkv_bias: bias on the qkv projection.
        scale: logit scale (default head_dim ** -0.5).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.head_dim * num_heads
        self.scale = scale if scale is not None else self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)
        self.fused_attn = True
        self.last_attention: torch.Tensor | None = None
        self.keep_attention = False

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x (B, N, dim); bias (B or 1, H or 1, N, N) added to the logits."""
        qkv = rearrange(self.qkv(x), "b n (t h d) -> t b h n d", t=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)
        if self.fused_attn and not self.keep_attention:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                logits = logits + bias
            attn = logits.softmax(dim=-1)
            if self.keep_attention:
                self.last_attention = attn.detach()
            out = attn @ v
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


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
    """

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
    ) -> None:
        super().__init__()
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
        self.head = nn.Sequential(nn.Linear(dim, embed_dim), nn.BatchNorm1d(embed_dim))
        self.grad_checkpointing = False
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)
        self.pretrained_cfg = ModelInfo(name="FaceViT", input_size=(3, img_size, img_size))
        self.pretrained_cfg.embed_dim = embed_dim

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _pos_embed(self, grid: int) -> torch.Tensor:
        if grid == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = rearrange(patch_pos, "1 (h w) d -> 1 d h w", h=self.grid)
        patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, rearrange(patch_pos, "1 d h w -> 1 (h w) d")], dim=1)

    def forward_features(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens after the final norm.

        Args:
            x: images (B, 3, H, W) in [-1, 1]; H = W = grid * patch_size for any grid.
            keypoints: unused by the plain ViT (accepted for a uniform interface).
            token_centers: unused by the plain ViT.

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
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                tokens = checkpoint(blk, tokens, use_reentrant=False)
            else:
                tokens = blk(tokens)
        return self.norm(tokens)

    def forward_ssl(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The normed CLS token (B, dim) for self-supervised heads."""
        return self.forward_features(x, keypoints, token_centers)[:, 0]

    def forward(self, x: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """Face embedding (B, embed_dim)."""
        return self.head(self.forward_ssl(x, keypoints))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay."""
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style layer groups (stem, blocks, head) for layer-wise LR decay."""
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed",
            "blocks": r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None)],
            "head": r"^norm|^head",
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        self.grad_checkpointing = enable


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
