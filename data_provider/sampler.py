"""Batch order fixed by seed and epoch alone.

The permutation of an epoch depends only on ``(seed, epoch)``, and batches are consecutive
slices of it, so micro-batches of size b taken k at a time hold exactly the samples of the
batches of size b*k: ``(b, GA=k)`` and ``(b*k, GA=1)`` see the same windows in the same
order. Each epoch's batches can also be listed without loading any data, which the
accumulation policy uses to know each window's sample count in advance.

With several processes, ``batch_size`` is the *global* micro-batch (micro-batch x processes):
each global batch is dealt to the processes in near-equal contiguous shares, so W processes
with micro-batch b see, together, exactly the batches one process with W*b sees. A share can
be empty when the last global batch has fewer samples than processes; that process then gets
one placeholder sample, which the loop weights with zero, so that it still takes part in the
gradient all-reduce.

``limit`` (``--limit_train_batches``, ``--fast_dev_run``) keeps the first global batches of
every epoch's order: each epoch still draws its own permutation, and the accumulation policy,
which lists the batches from here, sizes its windows and the schedule from the limited count.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler):
    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, on_epoch=None,
                 limit: int | None = None):  # fmt: skip
        self.size, self.batch_size, self.shuffle, self.seed, self.limit = size, batch_size, shuffle, seed, limit
        self.rank, self.world_size = rank, world_size
        self.on_epoch = on_epoch  # told each epoch the loop starts (the dataset draws its augmentation)
        self.epoch, self.skip = 0, 0
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate over ``epoch``'s batches, leaving out the first ``skip`` (resume)."""
        self.epoch, self.skip = epoch, skip
        if self.on_epoch is not None:
            self.on_epoch(epoch)

    def resize(self, batch_size: int) -> None:
        """Cut batches of another size (a divisor of the old one) from now on (out-of-memory
        recovery); a limit keeps the same samples."""
        if self.limit is not None:
            self.limit = self.limit * self.batch_size // batch_size
        self.batch_size, self._cached = batch_size, None

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of ``epoch`` (every process's share together)."""
        if self._cached is None or self._cached[0] != epoch:
            order = self.order(epoch)
            self._cached = (epoch, [order[i : i + self.batch_size] for i in range(0, self.size, self.batch_size)][: self.limit])
        return self._cached[1]

    def share(self, batch: np.ndarray) -> np.ndarray:
        """This process's part of a global batch (the whole batch on a single process)."""
        return np.array_split(batch, self.world_size)[self.rank] if self.world_size > 1 else batch

    def placeholder(self, epoch: int, index: int) -> bool:
        """True when this process has no sample of that global batch (it gets a stand-in)."""
        return self.world_size > 1 and len(self.share(self.batches(epoch)[index])) == 0

    @property
    def batches_per_epoch(self) -> int:
        return min(math.ceil(self.size / self.batch_size), self.limit or math.inf)

    def __iter__(self):
        for batch in self.batches(self.epoch)[self.skip :]:
            mine = self.share(batch)
            yield mine if len(mine) else batch[:1]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.skip
