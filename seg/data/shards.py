"""Which items each process reads: its share of every global training batch, and whole validation batches.

``train.batch_size`` is the global batch. Each epoch's order is one permutation of the items drawn from
(run.seed, epoch) alone; global batch k is items [k*B, (k+1)*B) of it (the last incomplete batch is
dropped), and process r of W takes the r-th slice of B/W items of each. With one process this is the
order of ``DataLoader(shuffle=True, drop_last=True)`` with a generator seeded the same way; with W
processes the epoch's global batches, and so (with the per-(seed, epoch, item) augmentation of
:class:`~seg.data.dataset.SegmentationDataset`) the crops seen in the epoch, are the same.

Validation is split into whole batches of ``B`` images in dataset order, dealt to the processes in
turn: every image is evaluated once (no padding, no duplicate), in the same batch (and so with the same
padding) as by a single process.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s order of items."""
    return seed * 100_003 + epoch


class GlobalBatchShard(torch.utils.data.Sampler[int]):
    """Process ``rank`` of ``world``'s items of each global batch of ``global_batch`` items, epoch by epoch
    (:meth:`set_epoch`). Use with ``DataLoader(batch_size=global_batch // world)``."""

    def __init__(self, length: int, global_batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} does not divide by {world} processes")
        self.length, self.global_batch, self.seed = length, global_batch, seed
        self.rank, self.world, self.epoch = rank, world, 0
        self.per_rank = global_batch // world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """The epoch's permutation of all items (the same on every process)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # as DataLoader draws its base seed first
        return torch.randperm(self.length, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        for batch in range(self.length // self.global_batch):
            start = batch * self.global_batch + self.rank * self.per_rank
            yield from order[start : start + self.per_rank].tolist()

    def __len__(self) -> int:
        return (self.length // self.global_batch) * self.per_rank


def validation_batches(length: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Process ``rank``'s validation batches: batches of ``batch_size`` consecutive items, every
    ``world``-th one starting at the ``rank``-th (a process may get one batch fewer than another)."""
    batches = [list(range(start, min(start + batch_size, length))) for start in range(0, length, batch_size)]
    return batches[rank::world]
