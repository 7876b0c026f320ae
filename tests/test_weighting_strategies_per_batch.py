"""Tests for seg/weighting/strategies/per_batch.py: the whole dataset as one batch, the EMA by hand, no host sync."""

import pytest
import torch
from conftest import CLAMP, DATASET, binary_batch, build, counts, masks

from seg.weighting.formulas import batch_counts, per_batch_pos_weight


@pytest.mark.parametrize("negatives", ["pixels", "all_zero"])
def test_per_batch_on_the_whole_dataset_equals_per_channel(negatives):
    batch = masks()
    per_channel = build("per_channel", DATASET, negatives=negatives)
    per_batch = build("per_batch", DATASET, negatives=negatives)
    torch.testing.assert_close(per_batch.batch_weight(batch), per_channel.fixed)
    direct = per_batch_pos_weight(batch_counts(batch["target"], batch["valid"]), per_channel.fixed, negatives, CLAMP)
    torch.testing.assert_close(direct, per_channel.fixed)
    assert per_batch.report({"mean_channel_weight": [1.5, 2.5]}, ["a", "b"]) == {"pos_weight": [1.5, 2.5]}


def test_per_batch_ema_by_hand_and_as_the_formula_chains_it():
    strategy = build("per_batch", counts([1], 4, 3), "binary", ema=0.9)
    assert not strategy.has_previous
    weights = [strategy.batch_weight(binary_batch(n)).item() for n in (1, 2, 1)]
    # 1 of 4 positive: 3 (no previous value: the current one); 2 of 4: 1 -> .9*3 + .1*1 = 2.8;
    # 1 of 4: 3 -> .9*2.8 + .1*3 = 2.82
    assert weights == pytest.approx([3.0, 2.8, 2.82])
    assert strategy.has_previous and strategy.previous.item() == pytest.approx(2.82)
    # bit for bit what per_batch_pos_weight gives with previous=None first, then chained
    fallback, chained, previous = strategy.dataset_pos_weight, [], None
    for n in (1, 2, 1):
        batch = binary_batch(n)
        previous = per_batch_pos_weight(
            batch_counts(batch["target"], batch["valid"]), fallback, "pixels", CLAMP, previous, 0.9
        )
        chained.append(previous.item())
    assert weights == chained
    without = build("per_batch", counts([1], 4, 3), "binary")
    assert [without.batch_weight(binary_batch(n)).item() for n in (1, 2, 1)] == pytest.approx([3.0, 1.0, 3.0])


def test_per_batch_makes_no_host_sync():
    """fullgraph compile fails on .item() and on Python branches over tensor values (the EMA flag too)."""
    eager = build("per_batch", DATASET, negatives="all_zero", ema=0.5)
    compiled_strategy = build("per_batch", DATASET, negatives="all_zero", ema=0.5)
    compiled = torch.compile(compiled_strategy.batch_weight, fullgraph=True, backend="eager")
    for batch in (masks(), {"target": masks()["target"].flip(0), "valid": masks()["valid"]}):
        torch.testing.assert_close(compiled(batch), eager.batch_weight(batch))
    torch.testing.assert_close(compiled_strategy.previous, eager.previous)
