"""Tests for seg/weighting/formulas.py: pos_weight formulas on hand-made masks; no host sync.

The strategies built on them: tests/test_weighting_strategies_*.py (one per strategy); what holds for
every strategy: tests/test_weighting_registry.py."""

import pytest
import torch

from seg.weighting.formulas import (
    batch_counts,
    global_pos_weight,
    negative_counts,
    per_batch_pos_weight,
    per_channel_pos_weight,
    ratio_weight,
)

CLAMP = (0.001, 1000.0)


def masks():
    """2 images, 2 channels, 2x2 pixels; one pixel of image 1 ignored.

    channel 0 positives: img0 (0,0),(0,1); img1 (0,0)      -> 3
    channel 1 positives: img0 (0,1);       img1 (1,1)      -> 2 (img1 (1,1) is ignored -> 1)
    """
    target = torch.zeros(2, 2, 2, 2)
    target[0, 0, 0, 0] = target[0, 0, 0, 1] = target[1, 0, 0, 0] = 1
    target[0, 1, 0, 1] = target[1, 1, 1, 1] = 1
    valid = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    valid[1, 0, 1, 1] = False
    return target, valid


def test_batch_counts_by_hand():
    target, valid = masks()
    counts = batch_counts(target, valid)
    # positives (3, 1); valid 7; all-zero valid pixels: img0 (1,0),(1,1); img1 (0,1),(1,0) -> 4
    torch.testing.assert_close(counts, torch.tensor([3.0, 1.0, 7.0, 4.0], dtype=torch.float64))


def test_negative_definitions_differ_on_overlapping_masks():
    positive, valid, all_zero = torch.tensor([3.0, 1.0]), torch.tensor(7.0), torch.tensor(4.0)
    torch.testing.assert_close(negative_counts(positive, valid, all_zero, "pixels"), torch.tensor([4.0, 6.0]))
    torch.testing.assert_close(negative_counts(positive, valid, all_zero, "all_zero"), torch.tensor([4.0, 4.0]))
    # per channel pos_weight: pixels 4/3, 6/1; all_zero 4/3, 4/1
    torch.testing.assert_close(
        per_channel_pos_weight(positive, torch.tensor([4.0, 6.0]), CLAMP).flatten(), torch.tensor([4 / 3, 6.0])
    )


def test_global_pools_channels():
    # (4 + 6) / (3 + 1) = 2.5
    assert global_pos_weight(torch.tensor([3.0, 1.0]), torch.tensor([4.0, 6.0]), CLAMP).item() == pytest.approx(2.5)


def test_zero_positives_take_the_clamp_max_not_inf():
    weight = ratio_weight(torch.tensor([10.0, 10.0, 0.0]), torch.tensor([0.0, 5.0, 5.0]), (0.01, 100.0))
    torch.testing.assert_close(weight, torch.tensor([100.0, 2.0, 0.01]))
    assert torch.isfinite(weight).all()


def test_per_batch_falls_back_where_a_channel_has_no_positives_or_negatives():
    target = torch.zeros(1, 3, 2, 2)
    target[0, 1] = 1  # channel 1 all positive: no negatives; channel 0 and 2 no positives... make 2 half
    target[0, 2, 0] = 1
    counts = batch_counts(target, torch.ones(1, 1, 2, 2, dtype=torch.bool))
    fallback = torch.tensor([7.0, 8.0, 9.0]).view(3, 1, 1)
    weight = per_batch_pos_weight(counts, fallback, "pixels", CLAMP)
    torch.testing.assert_close(weight.flatten(), torch.tensor([7.0, 8.0, 1.0]))  # channel 2: 2 neg / 2 pos


def test_per_batch_ema():
    counts = torch.tensor([1.0, 4.0, 0.0], dtype=torch.float64)  # C=1: 1 positive of 4 -> 3
    fallback = torch.ones(1, 1, 1)
    first = per_batch_pos_weight(counts, fallback, "pixels", CLAMP)
    second = per_batch_pos_weight(
        torch.tensor([2.0, 4.0, 0.0], dtype=torch.float64), fallback, "pixels", CLAMP, previous=first, ema=0.9
    )
    assert first.item() == pytest.approx(3.0)
    assert second.item() == pytest.approx(0.9 * 3.0 + 0.1 * 1.0)


def test_per_batch_makes_no_host_sync():
    """fullgraph compile fails on .item() and on Python branches over tensor values."""
    target, valid = masks()
    fallback = torch.ones(2, 1, 1)

    def step(target, valid, previous):
        counts = batch_counts(target, valid)
        return per_batch_pos_weight(counts, fallback, "all_zero", CLAMP, previous, 0.5)

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(target, valid, fallback), step(target, valid, fallback))
