"""Tests for seg/data/shards.py: each process's share of the global batches, and validation batches.

Pinned: with one process the order is exactly torch's ``DataLoader(shuffle=True, drop_last=True)`` with a
generator seeded the same way (the order of every run before DDP existed); with W processes, each
global batch is split into W slices that together are that batch, in order; validation deals whole
batches so that every image is evaluated once, in the batch a single process puts it in.
"""

import pytest
import torch

from seg.data.shards import GlobalBatchShard, epoch_seed, validation_batches


def dataloader_batches(length: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The reference: torch's own shuffled DataLoader, its generator seeded for the epoch."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    loader = torch.utils.data.DataLoader(
        list(range(length)), batch_size=batch, shuffle=True, generator=generator, drop_last=True
    )
    return [b.tolist() for b in loader]


@pytest.mark.parametrize(("length", "batch", "seed", "epoch"), [(20, 4, 0, 1), (23, 8, 3, 7), (128, 8, 1, 2)])
def test_one_process_is_torchs_shuffled_dataloader(length, batch, seed, epoch):
    shard = GlobalBatchShard(length, batch, seed)
    shard.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(list(range(length)), batch_size=batch, sampler=shard, drop_last=True)
    assert [b.tolist() for b in loader] == dataloader_batches(length, batch, seed, epoch)
    assert len(shard) == (length // batch) * batch


@pytest.mark.parametrize("world", [2, 4])
def test_processes_split_each_global_batch_in_rank_order(world):
    length, batch, seed, epoch = 37, 8, 5, 3
    expected = dataloader_batches(length, batch, seed, epoch)  # 4 global batches; 5 items dropped
    shares = []
    for rank in range(world):
        shard = GlobalBatchShard(length, batch, seed, rank, world)
        shard.set_epoch(epoch)
        shares.append(list(shard))
        assert len(shares[-1]) == len(shard) == 4 * batch // world
    per = batch // world
    for k, global_batch in enumerate(expected):
        assert sum((share[k * per : (k + 1) * per] for share in shares), []) == global_batch


def test_another_epoch_is_another_order_and_the_same_on_every_process():
    a, b = GlobalBatchShard(16, 4, 0, 0, 2), GlobalBatchShard(16, 4, 0, 1, 2)
    a.set_epoch(1), b.set_epoch(1)
    first = (list(a), list(b))
    a.set_epoch(2), b.set_epoch(2)
    assert (list(a), list(b)) != first
    assert torch.equal(a.order(), b.order())


def test_a_global_batch_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="does not divide"):
        GlobalBatchShard(10, 6, 0, 0, 4)


@pytest.mark.parametrize(("length", "batch", "world"), [(5, 4, 2), (10, 3, 2), (7, 2, 3), (1, 4, 2), (9, 4, 1)])
def test_validation_batches_cover_every_image_once_in_single_process_batches(length, batch, world):
    single = validation_batches(length, batch)
    assert single == [list(range(s, min(s + batch, length))) for s in range(0, length, batch)]
    shares = [validation_batches(length, batch, rank, world) for rank in range(world)]
    dealt = [b for share in shares for b in share]
    assert sorted(dealt) == single  # the same batches (same padding), none split, none repeated
    assert sorted(i for b in dealt for i in b) == list(range(length))
    assert [len(share) for share in shares] == [len(single[r::world]) for r in range(world)]
