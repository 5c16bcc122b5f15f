"""Margin losses against explicit formulas (logits and gradients, including theta + m > pi)
and against insightface's and AdaFace's own outputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

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
        theta = math.acos(min(max(cos[i, y].item(), -1 + 1e-3), 1 - 1e-3))
        ang = min(max(theta - 0.4 * z, 1e-3), math.pi - 1e-3)
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


# --- parity with insightface's CombinedMarginLoss and AdaFace's head (../shared/golden) ---


def _tight(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def _insightface_graph(g: dict, margin: torch.nn.Module):
    """PartialFC_V2's logits (normalised embeddings and weights, clamp) -> margin -> CE sum."""
    e = g["embeddings"].clone().requires_grad_(True)
    w = g["weight"].clone().requires_grad_(True)
    cos = F.linear(F.normalize(e), F.normalize(w)).clamp(-1, 1)
    cos.retain_grad()
    logits = margin(cos, g["labels"])
    ce = F.cross_entropy(logits, g["labels"], reduction="sum")
    ce.backward()
    return e, w, cos, logits, ce


@pytest.mark.parametrize("gradient", ["true", "straight_through"])
def test_cosface_equals_insightface(golden: Path, gradient: str) -> None:
    g = torch.load(golden / "margin_losses.pt", weights_only=True)
    e, w, cos, logits, ce = _insightface_graph(g, cosface(64.0, 0.4, gradient))
    _tight(cos, g["cosface_cos"])
    _tight(logits, g["cosface_logits"])
    _tight(ce, g["cosface_ce_sum"])  # 473.2851345
    _tight(cos.grad, g["cosface_grad_cos"])
    _tight(e.grad, g["cosface_grad_embeddings"])
    _tight(w.grad, g["cosface_grad_weight"])


@pytest.mark.parametrize(
    "gradient,grad_key",
    [("straight_through", "arcface"), ("true", "arcface_truegrad_nonreference")],
)
def test_arcface_equals_insightface_below_pi(golden: Path, gradient: str, grad_key: str) -> None:
    """Equal to insightface wherever theta + m <= pi. Sample 0 (target cos -0.9988) passes pi:
    insightface's cos(theta + m) rises again there, lafslib continues linearly (README)."""
    g = torch.load(golden / "margin_losses.pt", weights_only=True)
    labels = g["labels"]
    e, w, cos, logits, ce = _insightface_graph(g, arcface(64.0, 0.5, gradient))
    _tight(cos, g["arcface_cos"])
    rows = torch.arange(16)
    target = cos.detach()[rows, labels]
    past_pi = torch.acos(target) + 0.5 > math.pi
    assert past_pi.tolist() == [True] + [False] * 15
    ok = ~past_pi
    onehot = F.one_hot(labels, 10).bool()
    keep = ok[:, None] | ~onehot  # every logit but sample 0's target
    _tight(logits[keep], g["arcface_logits"][keep])
    theta0 = math.acos(target[0].item())
    assert g["arcface_logits"][0, labels[0]].item() == pytest.approx(64 * math.cos(theta0 + 0.5))
    assert logits[0, labels[0]].item() == pytest.approx(64 * (-1 - (theta0 + 0.5 - math.pi)))
    ce_rows = F.cross_entropy(logits, labels, reduction="none")
    ref_rows = F.cross_entropy(g["arcface_logits"], labels, reduction="none")
    _tight(ref_rows.sum(), g["arcface_ce_sum"])  # 450.2754767556
    _tight(ce_rows[ok], ref_rows[ok])
    # gradients: straight-through = insightface's; "true" = the differentiable reference formula
    _tight(cos.grad[ok], g[f"{grad_key}_grad_cos"][ok])
    _tight(e.grad[ok], g[f"{grad_key}_grad_embeddings"][ok])
    dtarget = 1.0 if gradient == "straight_through" else 1 / math.sin(theta0)  # lafslib's row 0
    expected0 = 64 * (torch.softmax(logits[0].detach(), 0) - onehot[0].double())
    expected0[labels[0]] *= dtarget
    _tight(cos.grad[0], expected0)
    # weight gradient: the reference's cos gradient with sample 0 replaced by lafslib's
    e2 = g["embeddings"].clone().requires_grad_(True)
    w2 = g["weight"].clone().requires_grad_(True)
    cos2 = F.linear(F.normalize(e2), F.normalize(w2)).clamp(-1, 1)
    if gradient == "straight_through":  # the same backward graph gives insightface's gradient
        _tight(
            torch.autograd.grad(cos2, w2, g["arcface_grad_cos"], True)[0], g["arcface_grad_weight"]
        )
    mixed = g[f"{grad_key}_grad_cos"].clone()
    mixed[0] = expected0
    _tight(w.grad, torch.autograd.grad(cos2, w2, mixed)[0])


@pytest.mark.parametrize("t_alpha,tag", [(1.0, "t1"), (0.01, "t0p01")])
def test_adaface_equals_reference(golden: Path, t_alpha: float, tag: str) -> None:
    """AdaFace head.py (float64): logits, CE, gradients, updated statistics, margin scaler."""
    g = torch.load(golden / "margin_losses.pt", weights_only=True)
    labels = g["labels"]
    e = g["embeddings"].clone().requires_grad_(True)
    kernel = g["kernel"].clone().requires_grad_(True)
    cos = e @ F.normalize(kernel, dim=0)  # AdaFace: unit kernel columns, e as given
    cos.retain_grad()
    loss = AdaFaceLoss(64.0, 0.4, 0.333, t_alpha).double()
    logits = loss(cos, g["norms"][:, 0], labels)
    ce = F.cross_entropy(logits, labels, reduction="sum")
    ce.backward()
    _tight(cos, g["adaface_cos_preclamp"])
    _tight(loss.batch_mean.reshape(1), g[f"adaface_{tag}_batch_mean"])
    _tight(loss.batch_std.reshape(1), g[f"adaface_{tag}_batch_std"])
    _tight(loss.margin_scaler(g["norms"][:, 0]), g[f"adaface_{tag}_margin_scaler"][:, 0])
    _tight(logits, g[f"adaface_{tag}_logits"])
    _tight(ce, g[f"adaface_{tag}_ce_sum"])
    _tight(cos.grad, g[f"adaface_{tag}_grad_cos_preclamp"])
    _tight(e.grad, g[f"adaface_{tag}_grad_embeddings"])
    _tight(kernel.grad, g[f"adaface_{tag}_grad_kernel"])
    # sample 1, class 5, cos 0.99994: inside the 1 - 1e-3 clamp (zero gradient there)
    assert cos[1, 5].item() > 1 - 1e-3 and cos.grad[1, 5].item() == 0.0
