"""CVLFace's face ViT (with and without KP-RPE), in CVLFace's parameter layout.

Kim et al., "KeyPoint Relative Position Encoding for Face Recognition", CVPR 2024, and the
CVLFace toolkit's ``vit`` / ``vit_kprpe`` backbones: patch 8 at 112x112 (14x14 tokens, no CLS),
embed 512, ReLU6 MLP, no qkv bias, learned absolute positions, and a flatten head
``Linear(512 * 196 -> 512) + BN + Linear + BN``. Parameter names equal CVLFace's (``feature.*``,
``blocks.*.mlp.fc1``, ...) except ``keypoint_linear.*`` -> ``kprpe.linear.*``, so
``lafs convert --format cvlface --model cvlface_vit_base_kprpe`` loads its ``model.pt``.

Example:
    >>> from lafslib.models import create_model
    >>> model = create_model("cvlface_vit_test_kprpe").eval()
    >>> model(torch.randn(2, 3, 112, 112), torch.rand(2, 5, 2)).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from timm.layers import DropPath, Mlp, resample_abs_pos_embed
from torch import nn

from lafslib.layers.attention import Attention
from lafslib.layers.kprpe import KPRPE, run_blocks
from lafslib.models._registry import ModelInfo, register_model
from lafslib.models.vit import init_vit_weights

__all__ = ["CVLFaceViT"]


class _PatchEmbed(nn.Module):
    """Non-overlapping patch projection (``patch_embed.proj`` as in CVLFace)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b d h w -> b (h w) d")


class CVLFaceBlock(nn.Module):
    """Pre-norm block: attention (no qkv bias, optional additive bias) + ReLU6 MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.ReLU6)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), bias))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CVLFaceViT(nn.Module):
    """CVLFace face ViT with an optional KP-RPE bias in every block.

    Args:
        img_size: input size (square); the flatten head fixes it.
        patch_size: patch size in pixels.
        dim: token width (CVLFace's ``embed_dim``).
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        embed_dim: output embedding size (CVLFace's ``num_classes`` / ``output_dim``).
        qkv_bias: bias on the qkv projection (CVLFace: none).
        drop_path: stochastic depth rate (linearly increasing over blocks).
        kprpe: add KP-RPE (then ``keypoints`` are required).
        kprpe_variant: KP-RPE context sharing (CVLFace's released models: splithead_unshared).
        num_keypoints: keypoints per face.
    """

    ssl_unused: tuple[str, ...] = ("feature",)
    """Modules ``forward`` uses and ``forward_ssl`` never reaches (pretraining leaves them
    out of the optimizer and the teacher's EMA)."""

    def __init__(
        self,
        img_size: int = 112,
        patch_size: int = 8,
        dim: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 5.0,
        embed_dim: int = 512,
        qkv_bias: bool = False,
        drop_path: float = 0.0,
        kprpe: bool = False,
        kprpe_variant: str = "splithead_unshared",
        num_keypoints: int = 5,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.num_patches = self.grid**2
        self.dim = dim
        self.ssl_dim = dim
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.patch_embed = _PatchEmbed(patch_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            CVLFaceBlock(dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates
        )
        self.norm = nn.LayerNorm(dim)
        self.feature = nn.Sequential(
            nn.Linear(dim * self.num_patches, dim, bias=False),
            nn.BatchNorm1d(dim, eps=2e-5),
            nn.Linear(dim, embed_dim, bias=False),
            nn.BatchNorm1d(embed_dim, eps=2e-5),
        )
        self.kprpe = KPRPE(num_heads, depth, num_keypoints, kprpe_variant) if kprpe else None
        self.grad_checkpointing = False
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_vit_weights)
        if self.kprpe is not None:
            self.kprpe.reset_parameters()
        self.pretrained_cfg = ModelInfo(
            name="CVLFaceViT",
            input_size=(3, img_size, img_size),
            needs_keypoints=kprpe,
            num_keypoints=num_keypoints,
            embed_dim=embed_dim,
        )

    def _pos_embed(self, grid: int) -> torch.Tensor:
        if grid == self.grid:
            return self.pos_embed
        return resample_abs_pos_embed(
            self.pos_embed,
            [grid, grid],
            [self.grid, self.grid],
            num_prefix_tokens=0,
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
            keypoints: (B, K, 2) in [0, 1] as (x, y); required with KP-RPE, else unused.
            token_centers: (B, N, 2) in [0, 1]: token positions for KP-RPE instead of the grid.

        Returns:
            (B, N, dim) (no CLS token).
        """
        if x.shape[-1] != x.shape[-2] or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"CVLFaceViT expects square inputs divisible by {self.patch_size}, "
                f"got {tuple(x.shape)}"
            )
        grid = x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x) + self._pos_embed(grid)
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
        """Mean of the normed tokens (B, dim) for self-supervised heads (no CLS token)."""
        return self.forward_features(x, keypoints, token_centers).mean(dim=1)

    def forward(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Face embedding (B, embed_dim) from the flatten head (training input size only)."""
        tokens = self.forward_features(x, keypoints, token_centers)
        if tokens.shape[1] != self.num_patches:
            raise ValueError(
                f"the flatten head needs {self.grid * self.patch_size}px inputs "
                f"({self.num_patches} tokens), got {tokens.shape[1]} tokens"
            )
        return self.feature(tokens.flatten(1))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay."""
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style layer groups (stem, blocks, head) for layer-wise LR decay."""
        return {
            "stem": r"^pos_embed|^patch_embed|^kprpe",
            "blocks": r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None)],
            "head": r"^norm|^feature",
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        self.grad_checkpointing = enable


def _build(kwargs: dict[str, Any], **defaults: Any) -> CVLFaceViT:
    defaults.update(kwargs)
    return CVLFaceViT(**defaults)


@register_model
def cvlface_vit_small(**kwargs: Any) -> CVLFaceViT:
    """CVLFace ViT small: embed 512, depth 12, 8 heads, MLP ratio 5, drop path 0.1."""
    return _build(kwargs, depth=12, num_heads=8, mlp_ratio=5.0, drop_path=0.1)


@register_model
def cvlface_vit_base(**kwargs: Any) -> CVLFaceViT:
    """CVLFace ViT base: embed 512, depth 24, 16 heads, MLP ratio 3, drop path 0.1."""
    return _build(kwargs, depth=24, num_heads=16, mlp_ratio=3.0, drop_path=0.1)


@register_model
def cvlface_vit_small_kprpe(**kwargs: Any) -> CVLFaceViT:
    """CVLFace ViT small with KP-RPE (splithead_unshared), as released with the paper."""
    return _build(kwargs, depth=12, num_heads=8, mlp_ratio=5.0, drop_path=0.1, kprpe=True)


@register_model
def cvlface_vit_base_kprpe(**kwargs: Any) -> CVLFaceViT:
    """CVLFace ViT base with KP-RPE (splithead_unshared), as released with the paper."""
    return _build(kwargs, depth=24, num_heads=16, mlp_ratio=3.0, drop_path=0.1, kprpe=True)


@register_model
def cvlface_vit_test(**kwargs: Any) -> CVLFaceViT:
    """Tiny CVLFace ViT (dim 32, depth 2, 2 heads, MLP ratio 2, 16-d output) for tests."""
    return _build(kwargs, dim=32, depth=2, num_heads=2, mlp_ratio=2.0, embed_dim=16)


@register_model
def cvlface_vit_test_kprpe(**kwargs: Any) -> CVLFaceViT:
    """Tiny CVLFace ViT with KP-RPE (geometry of ``cvlface_vit_test``) for tests."""
    return _build(kwargs, dim=32, depth=2, num_heads=2, mlp_ratio=2.0, embed_dim=16, kprpe=True)
