"""Attention: the fused (SDPA, bias as attn_mask) and manual paths agree on CPU."""

from __future__ import annotations

import pytest
import torch

from lafslib.layers import Attention


def _pair(bias_grad: bool) -> tuple[Attention, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    attn = Attention(dim=32, num_heads=4)
    x = torch.randn(3, 10, 32)
    bias = torch.randn(3, 4, 10, 10, requires_grad=bias_grad)
    return attn, x, bias


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "kprpe-bias"])
def test_fused_path_equals_manual_path(with_bias: bool) -> None:
    attn, x, bias = _pair(bias_grad=False)
    bias = bias if with_bias else None
    fused = attn(x, bias)
    attn.fused_attn = False
    manual = attn(x, bias)
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=1e-5)
    assert not torch.equal(attn(x, None if with_bias else torch.randn(3, 4, 10, 10)), manual)


def test_gradients_agree_and_reach_the_bias() -> None:
    """A bias that needs a gradient takes the manual path on CPU; its gradients equal SDPA's
    on the others."""
    attn, x, bias = _pair(bias_grad=True)
    attn(x, bias).square().sum().backward()
    manual = [p.grad.clone() for p in attn.parameters()], bias.grad.clone()
    attn.zero_grad()
    frozen = bias.detach()
    attn(x, frozen).square().sum().backward()  # fused: SDPA with attn_mask
    for got, ref in zip((p.grad for p in attn.parameters()), manual[0]):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert manual[1].abs().sum() > 0


def test_returned_maps_are_softmax_rows() -> None:
    attn, x, bias = _pair(bias_grad=False)
    out, maps = attn(x, bias, return_attention=True)
    torch.testing.assert_close(out, attn(x, bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 4, 10))
