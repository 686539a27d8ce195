"""Batch order fixed by seed and epoch alone.

The permutation of an epoch depends only on ``(seed, epoch)``, and batches are consecutive
slices of it, so micro-batches of size b taken k at a time hold exactly the samples of the
batches of size b*k: ``(b, GA=k)`` and ``(b*k, GA=1)`` see the same windows in the same
order. Each epoch's batches can also be listed without loading any data, which the
accumulation policy uses to know each window's sample count in advance.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler):
    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate over ``epoch``'s batches, leaving out the first ``skip`` (resume)."""
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def batches(self, epoch: int) -> list[np.ndarray]:
        order = self.order(epoch)
        return [order[i : i + self.batch_size] for i in range(0, self.size, self.batch_size)]

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __iter__(self):
        yield from self.batches(self.epoch)[self.skip :]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.skip
