"""A resumable, world-size independent sampler.

Each epoch draws one global permutation from ``seed + epoch``; global batch ``k`` is
``perm[k*G : (k+1)*G]`` with ``G = batch_size * world_size`` and rank ``r`` takes the ``r``-th
contiguous slice of it, so the union of the ranks' batches equals the one-process batch of
size ``G``. Training resumes mid-epoch by starting at a batch offset, without loading the
skipped samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Shuffled indices for one rank, epoch by epoch, with a start offset in batches.

    Args:
        length: dataset size.
        batch_size: per-rank batch size.
        rank: this process's rank.
        world_size: number of processes.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        shuffle: permute (True) or keep dataset order.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.length = length
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0
        global_batch = batch_size * world_size
        self.batches_per_epoch = length // global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"dataset of {length} images is smaller than one global batch of {global_batch} "
                f"({batch_size} per process x {world_size} processes); lower data.batch_size"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and the first batch to yield."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:  # a tensor, not a list: 8 bytes per record instead of a Python int
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.length, generator=g)
        else:
            perm = torch.arange(self.length)
        global_batch = self.batch_size * self.world_size
        for k in range(self.start_batch, self.batches_per_epoch):
            lo = k * global_batch + self.rank * self.batch_size
            yield from perm[lo : lo + self.batch_size].tolist()

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
