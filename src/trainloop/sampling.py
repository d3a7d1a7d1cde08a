"""Batch sampling: seeded per epoch (exact resume) and, optionally, grouped by length."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


class EpochSampler:
    """Yields index batches; the order depends only on (seed, epoch).

    With `length_of`, indices are shuffled, cut into pools of 50 batches, sorted by length within a
    pool and the resulting batches shuffled: batches hold similar lengths, so padding stays small.
    """

    POOL_BATCHES = 50  # pool size in batches: large enough to group, small enough to stay random

    def __init__(self, size: int, batch_size: int, seed: int, length_of: Callable[[int], int] | None = None) -> None:
        self.size, self.batch_size, self.seed, self.length_of = size, batch_size, seed, length_of
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        batches = (self.size + self.batch_size - 1) // self.batch_size
        return batches - 1 if self._merges_last() else batches

    def _merges_last(self) -> bool:
        """A final batch of one row joins the one before it: BatchNorm cannot train on a single row."""
        return self.size > self.batch_size and self.size % self.batch_size == 1

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.length_of is not None:
            pool = self.batch_size * self.POOL_BATCHES
            order = [i for start in range(0, self.size, pool)
                     for i in sorted(order[start:start + pool], key=self.length_of)]
        batches = [order[i:i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        if self._merges_last():
            last = batches.pop()
            batches[-1] = batches[-1] + last
        if self.length_of is not None:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return iter(batches)
