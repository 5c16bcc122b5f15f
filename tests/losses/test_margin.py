"""Margin losses against explicit formulas: logits and gradients, including theta + m > pi."""

from __future__ import annotations

import math

import pytest
import torch

from lafslib.losses import AdaFaceLoss, CombinedMarginLoss, arcface, cosface, frabsm_weights


def _cosines(b: int = 6, c: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, c, generator=g, dtype=torch.float64) * 1.9 - 0.95).requires_grad_(True)


@pytest.mark.parametrize("m1,m2,m3", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.4), (1.1, 0.3, 0.2)])
def test_combined_margin_formula_and_gradient(m1: float, m2: float, m3: float) -> None:
    cos = _cosines()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    out = CombinedMarginLoss(64.0, m1, m2, m3)(cos, labels)
    ref = cos.detach().clone()
    for i, y in enumerate(labels.tolist()):
        theta = math.acos(ref[i, y].item())
        angle = m1 * theta + m2
        val = math.cos(angle) if angle <= math.pi else -1 - (angle - math.pi)
        ref[i, y] = val - m3
    torch.testing.assert_close(out, 64.0 * ref)
    # true gradient of the target logit: d/dcos [cos(m1 acos(c) + m2)] = m1 sin(angle) / sin(theta)
    out[0, 0].backward()
    c = cos[0, 0].item()
    theta = math.acos(c)
    angle = m1 * theta + m2
    dtarget = (
        m1 * math.sin(angle) / math.sqrt(1 - c * c)
        if angle <= math.pi
        else 1 / math.sqrt(1 - c * c) * m1
    )
    assert cos.grad[0, 0].item() == pytest.approx(64.0 * dtarget, rel=1e-5)
    assert cos.grad[0, 1].item() == 0.0


def test_beyond_pi_is_monotonic_and_continuous() -> None:
    theta = torch.linspace(0.01, math.pi - 0.01, 2000, dtype=torch.float64)
    logits = CombinedMarginLoss(1.0, 1.0, 0.5, 0.0)(
        torch.cos(theta)[:, None], torch.zeros(2000, dtype=torch.long)
    )[:, 0]
    assert (logits[1:] < logits[:-1]).all()  # decreasing in theta, also past theta + m = pi
    assert (logits[1:] - logits[:-1]).abs().max() < 0.01  # no jump


def test_straight_through_matches_insightface() -> None:
    cos = _cosines()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    st = arcface(gradient="straight_through")
    st(cos, labels).sum().backward()
    torch.testing.assert_close(cos.grad, torch.full_like(cos, 64.0))  # gradient of s * cos
    true = arcface()
    cos2 = _cosines()
    true(cos2, labels).sum().backward()
    assert not torch.allclose(cos2.grad, cos.grad)
    torch.testing.assert_close(st(cos, labels), true(cos, labels))


def test_cosface_and_ignored_rows() -> None:
    cos = _cosines().detach()
    labels = torch.tensor([0, -1, 2, 3, 4, 0])
    out = cosface()(cos, labels)
    assert out[0, 0] == pytest.approx(64 * (cos[0, 0] - 0.4))
    torch.testing.assert_close(out[1], 64 * cos[1])  # -1: no target in this shard


def test_adaface_formula_and_running_stats() -> None:
    cos = _cosines().detach()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    norms = torch.tensor([5.0, 10.0, 20.0, 30.0, 40.0, 50.0], dtype=torch.float64)
    loss = AdaFaceLoss(margin=0.4, h=0.333, t_alpha=0.01)
    out = loss(cos, norms, labels)
    mean = 0.99 * 20 + 0.01 * norms.mean()
    std = 0.99 * 100 + 0.01 * norms.std()
    torch.testing.assert_close(loss.batch_mean, mean.float())
    torch.testing.assert_close(loss.batch_std, std.float())
    for i, y in enumerate(labels.tolist()):
        z = max(-1.0, min(1.0, (norms[i].item() - mean.item()) / (std.item() + 1e-3) * 0.333))
        theta = math.acos(cos[i, y].item())
        ang = min(max(theta - 0.4 * z, 1e-6), math.pi - 1e-6)
        expect = 64 * (math.cos(ang) - (0.4 + 0.4 * z))
        assert out[i, y].item() == pytest.approx(expect, rel=1e-4, abs=1e-3)
    loss.eval()
    before = loss.batch_mean.clone()
    loss(cos, norms, labels)
    assert loss.batch_mean == before  # frozen in eval mode


def test_frabsm_weights() -> None:
    ce = torch.tensor([0.1, 0.5, 2.0])
    w = frabsm_weights(ce, alpha=1.0, p0=0.6)
    p = torch.exp(-ce)
    torch.testing.assert_close(w, 1 + (1 / (1 + torch.exp(p - 0.6)) - 0.5))
    assert w[2] > w[0]  # hard samples (low p) weigh more
    wb = frabsm_weights(ce, alpha=1.0, mode="batch")
    assert torch.allclose(wb, wb[0].expand(3))
    half = AdaFaceLoss(additive_scale=0.7)
    half.eval()
    cos = _cosines().detach()
    labels = torch.zeros(6, dtype=torch.long)
    full = AdaFaceLoss().eval()
    norms = torch.full((6,), 20.0, dtype=torch.float64)
    # z = 0 at the initial mean: additive term m vs 0.7 m
    diff = (half(cos, norms, labels) - full(cos, norms, labels))[:, 0]
    torch.testing.assert_close(diff, torch.full((6,), 64 * 0.3 * 0.4, dtype=torch.float64))
