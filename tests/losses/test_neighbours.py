"""Nearest-neighbour teacher targets: the queue against a brute-force search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lafslib.losses import NeighbourQueue


def _brute_force(bank: np.ndarray, outputs: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    query = query / np.linalg.norm(query, axis=1, keepdims=True)
    order = np.argsort(-(query @ bank.T), axis=1)[:, :k]
    return outputs[order].mean(axis=1)


@pytest.mark.parametrize("k", [1, 3])
def test_targets_are_the_mean_outputs_of_the_nearest_entries(k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    feats, outs = torch.randn(40, 6, generator=gen), torch.randn(40, 10, generator=gen)
    queue = NeighbourQueue(size=64, feature_dim=6, out_dim=10, k=k)
    queue.push(feats[:25], outs[:25])
    queue.push(feats[25:], outs[25:])
    query = torch.randn(7, 6, generator=gen) * 5
    expected = _brute_force(feats.numpy(), outs.numpy(), query.numpy(), k)
    np.testing.assert_allclose(queue.targets(query).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_the_oldest_entries_are_overwritten() -> None:
    queue = NeighbourQueue(size=4, feature_dim=2, out_dim=1)
    angles = torch.arange(7.0)
    feats = torch.stack([angles.cos(), angles.sin()], dim=1)
    queue.push(feats[:3], angles[:3, None])
    queue.push(feats[3:6], angles[3:6, None])  # 0 and 1 are gone, 2..5 stay
    assert int(queue.count) == 6
    assert sorted(queue.outputs.flatten().tolist()) == [2.0, 3.0, 4.0, 5.0]
    # a query at the angle of entry 0 now finds 5 (angle 5 rad is -1.28 rad: the nearest left)
    assert queue.targets(feats[:1]).item() == 5.0
    # a batch larger than the queue keeps its last rows
    queue.push(feats, angles[:, None])
    assert sorted(queue.outputs.flatten().tolist()) == [3.0, 4.0, 5.0, 6.0]


def test_empty_queue_and_bad_sizes() -> None:
    queue = NeighbourQueue(size=8, feature_dim=2, out_dim=3, k=2)
    assert not queue.ready
    with pytest.raises(RuntimeError, match="fewer than k=2"):
        queue.targets(torch.ones(1, 2))
    queue.push(torch.ones(1, 2), torch.ones(1, 3))
    assert not queue.ready  # one entry, k=2
    with pytest.raises(ValueError, match="k <= size"):
        NeighbourQueue(size=2, feature_dim=2, out_dim=3, k=3)
