"""Multi-head self-attention with an optional additive bias (e.g. KP-RPE), fused or manual.

The fused path calls :func:`torch.nn.functional.scaled_dot_product_attention` with the bias as
``attn_mask``; the manual path computes the softmax explicitly and can return the attention maps
(for visualisation). Both give the same output. A bias that needs a gradient on CPU takes the
manual path: SDPA's CPU kernels do not differentiate ``attn_mask`` and its math fallback costs
more than the manual path.

Example:
    >>> attn = Attention(dim=64, num_heads=4)
    >>> x = torch.randn(2, 10, 64)
    >>> bias = torch.zeros(2, 4, 10, 10)
    >>> out, maps = attn(x, bias, return_attention=True)
    >>> out.shape, maps.shape
    (torch.Size([2, 10, 64]), torch.Size([2, 4, 10, 10]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["Attention"]


class Attention(nn.Module):
    """Multi-head self-attention whose logits take an additive per-layer bias.

    Args:
        dim: token width.
        num_heads: attention heads.
        head_dim: width per head (default ``dim // num_heads``).
        qkv_bias: bias on the qkv projection.
        scale: logit scale (default ``head_dim ** -0.5``).
        proj_bias: bias on the output projection.

    Attributes:
        fused_attn: use SDPA (default); set False to force the manual path.
        keep_attention: take the manual path and store the last maps in ``last_attention``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        scale: float | None = None,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.head_dim * num_heads
        self.scale = scale if scale is not None else self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.fused_attn = True
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend.

        Args:
            x: tokens (B, N, dim).
            bias: additive logit bias broadcastable to (B, H, N, N), e.g. a KP-RPE layer bias.
            return_attention: also return the attention maps (B, H, N, N) (manual path).

        Returns:
            (B, N, dim), or ``(output, maps)`` when ``return_attention``.
        """
        # (B, N, 3 * H * d) -> 3 x (B, H, N, d)
        qkv = rearrange(self.qkv(x), "b n (t h d) -> t b h n d", t=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)
        maps = None
        fused = self.fused_attn and not (self.keep_attention or return_attention)
        if fused and bias is not None and bias.requires_grad and q.device.type == "cpu":
            # SDPA's CPU kernels give no gradient to attn_mask; its math fallback is slower
            # than the manual path below (same result)
            fused = False
        if fused:
            if bias is not None:
                bias = bias.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        else:
            # one copy to contiguous q, k, v instead of one per matmul (and per gradient)
            q, k, v = qkv.contiguous().unbind(0)
            logits = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                logits = logits.add_(bias)  # in place: the matmul output is not saved
            maps = logits.softmax(dim=-1)
            if self.keep_attention:
                self.last_attention = maps.detach()
            out = maps @ v
        out = self.proj(rearrange(out, "b h n d -> b n (h d)"))
        if return_attention:
            assert maps is not None
            return out, maps
        return out
