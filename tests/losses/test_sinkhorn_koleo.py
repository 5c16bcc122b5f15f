"""Sinkhorn-Knopp teacher targets and the KoLeo regulariser against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lafslib.losses import DINOLoss, koleo_loss, sinkhorn_knopp


def _sinkhorn_reference(logits: np.ndarray, temp: float, iterations: int) -> np.ndarray:
    """SwAV's algorithm written out in float64: Q = exp(logits / temp)^T, normalised to total
    mass 1, then alternately rows (prototypes) to 1/K and columns (samples) to 1/B."""
    q = np.exp(logits / temp).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * b
    return (q * b).T


@pytest.mark.parametrize("shape", [(8, 5), (6, 32)])
@pytest.mark.parametrize("iterations", [1, 3])
def test_sinkhorn_matches_reference(shape, iterations) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    got = sinkhorn_knopp(logits, 0.1, iterations)
    ref = _sinkhorn_reference(logits.numpy(), 0.1, iterations)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.sum(1), torch.ones(shape[0], dtype=torch.float64))


def test_sinkhorn_balances_prototypes_where_softmax_does_not() -> None:
    # every sample prefers prototype 0: softmax targets pile on it, Sinkhorn spreads them
    logits = torch.zeros(12, 4)
    logits[:, 0] = 1.0
    logits += 0.01 * torch.randn(12, 4, generator=torch.Generator().manual_seed(1))
    q = sinkhorn_knopp(logits, 0.05, iterations=50)
    torch.testing.assert_close(q.sum(0), torch.full((4,), 3.0), atol=1e-4, rtol=0)
    assert torch.softmax(logits / 0.05, -1).sum(0)[0] > 11


def test_dino_loss_with_sinkhorn_targets() -> None:
    torch.manual_seed(0)
    student = [torch.randn(4, 16) for _ in range(4)]
    teacher = [torch.randn(4, 16) for _ in range(2)]
    loss = DINOLoss(16, centering="sinkhorn")(student, teacher, 0.04)
    q = sinkhorn_knopp(torch.cat(teacher), 0.04).chunk(2)
    ref = (
        sum(
            -(q[t] * torch.log_softmax(s / 0.1, -1)).sum(-1).mean()
            for t in range(2)
            for i, s in enumerate(student)
            if i != t
        )
        / 6
    )
    torch.testing.assert_close(loss, ref)
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(16, centering="mean")


def test_koleo_matches_brute_force_and_spreads() -> None:
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    n = torch.nn.functional.normalize(x, dim=-1)
    d = torch.cdist(n, n) + torch.eye(7) * 10
    ref = -torch.log(d.min(1).values + 1e-8).mean()
    torch.testing.assert_close(koleo_loss(x), ref.float())
    # gradient descent on KoLeo pushes the nearest neighbours apart
    y = x.float().clone().requires_grad_(True)
    before = koleo_loss(y)
    before.backward()
    with torch.no_grad():
        y -= 0.05 * y.grad
    assert koleo_loss(y) < before
    with pytest.raises(ValueError, match="B >= 2"):
        koleo_loss(torch.randn(1, 4))
