"""KP-RPE layer: buckets against the formula, context layout per variant, token centres, grads."""

from __future__ import annotations

import math

import pytest
import torch

from lafslib.layers import KPRPE, Attention
from lafslib.layers.kprpe import (
    grid_bucket_ids,
    kprpe_grid_centers,
    piecewise_index,
    relative_keypoints,
)


def _idx(d: float, alpha: float = 1.9, beta: float = 3.8, gamma: float = 15.2) -> int:
    """The iRPE piecewise index of one offset, written out in plain Python."""
    if abs(d) <= alpha:
        return round(d)
    v = round(alpha + math.log(abs(d) / alpha) / math.log(gamma / alpha) * (beta - alpha))
    return int(math.copysign(min(beta, v), d))


def test_grid_buckets_match_an_explicit_loop() -> None:
    for h, w in [(14, 14), (6, 6), (3, 5)]:
        ids = grid_bucket_ids(h, w)
        assert ids.shape == (h * w, h * w)
        for i in range(h * w):
            for j in range(h * w):
                dr, dc = i // w - j // w, i % w - j % w
                assert ids[i, j] == (_idx(dr) + 3) * 7 + (_idx(dc) + 3), (h, w, i, j)
    assert grid_bucket_ids(14, 14).max() == 48 and grid_bucket_ids(14, 14).min() == 0
    assert grid_bucket_ids(14, 14) is grid_bucket_ids(14, 14)  # cached per grid size


def test_piecewise_index_on_fractional_offsets() -> None:
    d = torch.tensor([0.0, 0.4, -0.6, 1.2, 1.9, -2.0, 3.0, 5.5, -8.0, 12.9, 40.0])
    assert piecewise_index(d, 1.9, 3.8, 15.2).tolist() == [_idx(float(v)) for v in d]


def test_prefix_tokens_get_the_zero_bucket() -> None:
    ids = grid_bucket_ids(4, 4, num_prefix_tokens=1)
    assert ids.shape == (17, 17) and (ids[0] == 49).all() and (ids[:, 0] == 49).all()
    torch.testing.assert_close(ids[1:, 1:], grid_bucket_ids(4, 4))


def test_relative_features_order_and_no_keypoint_gradient() -> None:
    kp = torch.rand(2, 5, 2, requires_grad=True)
    centers = kprpe_grid_centers(14, 14)
    torch.testing.assert_close(centers[1], torch.tensor([1.5 / 14, 0.5 / 14]))  # (x, y)
    rel = relative_keypoints(kp, centers)
    assert rel.shape == (2, 196, 10) and not rel.requires_grad
    torch.testing.assert_close(rel[1, 20, 6:8], centers[20] - kp[1, 3].detach())


@pytest.mark.parametrize(
    "variant,heads,layers",
    [("shared", 1, 1), ("unshared", 1, 3), ("splithead", 2, 1), ("splithead_unshared", 2, 3)],
)
def test_bias_equals_context_lookup(variant: str, heads: int, layers: int) -> None:
    torch.manual_seed(0)
    rpe = KPRPE(num_heads=2, depth=3, variant=variant)
    assert rpe.linear.out_features == 49 * heads * layers
    torch.nn.init.normal_(rpe.linear.weight)
    kp = torch.rand(2, 5, 2)
    bias = rpe(kp, grid_size=4)
    ids = grid_bucket_ids(4, 4)
    out = rpe.linear(relative_keypoints(kp, kprpe_grid_centers(4, 4)))  # (B, N, L*H*nb)
    ctx = out.view(2, 16, layers, heads, 49)  # CVLFace's chunk order: layer-major, then head
    for layer in range(3):
        b = bias[layer]
        assert b.shape == (2, heads, 16, 16)
        c = ctx[:, :, layer if layers > 1 else 0]
        for i in range(16):
            for j in (0, 5, 15):
                expected = c[:, i, :, ids[i, j]]
                torch.testing.assert_close(b[:, :, i, j], expected)


def test_token_centers_at_the_grid_reduce_to_the_grid_case() -> None:
    torch.manual_seed(1)
    rpe = KPRPE(num_heads=3, depth=2, num_prefix_tokens=1)
    torch.nn.init.normal_(rpe.linear.weight)
    kp = torch.rand(4, 5, 2)
    grid = rpe(kp, grid_size=14)
    centers = kprpe_grid_centers(14, 14).expand(4, -1, -1)
    free = rpe(kp, grid_size=14, token_centers=centers)
    for layer in range(2):
        assert torch.equal(free[layer], grid[layer])
        assert (grid[layer][:, :, 0] == 0).all() and (grid[layer][:, :, :, 0] == 0).all()
    # a 6x6 crop of tokens inside a 14x14 image: offsets measured in 1/14 units
    sub = torch.stack(torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij"), -1)
    sub = (sub.flip(-1).reshape(-1, 2) + 3 + 0.5) / 14
    crop = rpe(kp, 14, token_centers=sub.expand(4, -1, -1))[1]
    idx = torch.tensor([(r + 3) * 14 + c + 3 for r in range(6) for c in range(6)]) + 1
    full = grid[1][:, :, idx][:, :, :, idx]
    torch.testing.assert_close(crop[:, :, 1:, 1:], full)


def test_gradient_reaches_the_linear_and_not_the_keypoints() -> None:
    rpe = KPRPE(num_heads=2, depth=2)
    attn = Attention(16, 2)
    kp = torch.rand(2, 5, 2, requires_grad=True)
    x = torch.randn(2, 9, 16)
    bias = rpe(kp, 3)
    (attn(x, bias[0]) + attn(x, bias[1])).square().sum().backward()
    assert rpe.linear.weight.grad is not None and rpe.linear.weight.grad.abs().sum() > 0
    assert kp.grad is None


def test_fused_and_manual_attention_agree_with_a_bias() -> None:
    torch.manual_seed(2)
    attn = Attention(32, 4, qkv_bias=False)
    x = torch.randn(3, 10, 32)
    bias = torch.randn(3, 4, 10, 10, requires_grad=True)
    with torch.no_grad():
        fused = attn(x, bias)  # SDPA with the bias as attn_mask
    manual, maps = attn(x, bias, return_attention=True)
    torch.testing.assert_close(manual, fused, atol=1e-5, rtol=1e-5)
    assert maps.shape == (3, 4, 10, 10)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 4, 10))
    # training on CPU (bias needs a gradient) takes the manual path; gradients match SDPA's
    (g_train,) = torch.autograd.grad(attn(x, bias).square().sum(), bias)
    q, k, v = attn.qkv(x).view(3, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    ref = attn.proj(ref.transpose(1, 2).reshape(3, 10, 32))
    (g_ref,) = torch.autograd.grad(ref.square().sum(), bias)
    torch.testing.assert_close(g_train, g_ref, atol=1e-5, rtol=1e-5)
    for broadcast in (bias[:, :1], bias[:1]):  # shared heads / batch broadcast
        torch.testing.assert_close(
            attn(x, broadcast), attn(x, broadcast.detach()), atol=1e-5, rtol=1e-5
        )


def test_input_checks() -> None:
    rpe = KPRPE(num_heads=2, depth=2)
    with pytest.raises(ValueError, match="keypoints must be"):
        rpe(torch.rand(2, 4, 2), 3)
    with pytest.raises(ValueError, match="token_centers"):
        rpe(torch.rand(2, 5, 2), 3, token_centers=torch.rand(3, 9, 2))
    with pytest.raises(ValueError, match="variant"):
        KPRPE(num_heads=2, depth=2, variant="nope")
