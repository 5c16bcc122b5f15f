"""Per-sample seeding of a dataset's random transforms, independent of ranks and workers."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["SeededViews"]


class SeededViews(Dataset):
    """Seed the view RNG from (seed, epoch, index), so a sample's views do not depend on the
    world size, the rank, the number of workers or the resume point."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.dataset[index]
