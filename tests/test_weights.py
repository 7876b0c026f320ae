"""Weighting strategies on hand-made masks; invariances between strategies; no host sync."""

import numpy as np
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
from seg.weighting.registry import DatasetCounts, build_weighting, class_counts

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


def test_per_channel_with_one_channel_equals_global():
    counts = DatasetCounts(np.array([30]), valid=100, all_zero=70)
    glob = build_weighting("global", counts, "binary", "pixels", CLAMP)
    chan = build_weighting("per_channel", counts, "binary", "pixels", CLAMP)
    assert glob.fixed.item() == pytest.approx(70 / 30)
    assert chan.fixed.shape == (1, 1, 1) and chan.fixed.item() == pytest.approx(glob.fixed.item())
    assert glob.reported_pos_weight() == pytest.approx(70 / 30)
    assert chan.reported_pos_weight() == pytest.approx([70 / 30])


@pytest.mark.parametrize("negatives", ["pixels", "all_zero"])
def test_per_batch_on_the_whole_dataset_equals_per_channel(negatives):
    target, valid = masks()
    counts = batch_counts(target, valid)
    dataset = DatasetCounts(np.array([3, 1]), valid=7, all_zero=4)
    per_channel = build_weighting("per_channel", dataset, "multilabel", negatives, CLAMP)
    per_batch = build_weighting("per_batch", dataset, "multilabel", negatives, CLAMP)
    torch.testing.assert_close(per_batch.batch_weight({"target": target, "valid": valid}), per_channel.fixed)
    direct = per_batch_pos_weight(counts, per_channel.fixed, negatives, CLAMP)
    torch.testing.assert_close(direct, per_channel.fixed)


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


def test_class_counts_per_format():
    counts = DatasetCounts(np.array([30, 5]), valid=100, all_zero=68)
    np.testing.assert_array_equal(class_counts(counts, "multilabel")[0], [30, 5, 68])
    np.testing.assert_array_equal(class_counts(counts, "index")[0], [30, 5])
    binary = DatasetCounts(np.array([20]), valid=100, all_zero=80)
    per_class, mode = class_counts(binary, "binary")
    np.testing.assert_array_equal(per_class, [80, 20])
    assert mode == "binary"


def test_class_map_on_binary_with_normalize_equals_global():
    """On binary masks class_map (as weight) with normalize equals global pos_weight."""
    from seg.losses import weighted_bce

    g = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 1, 6, 6, generator=g) > 0.7).float()
    valid = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    logits = torch.randn(2, 1, 6, 6, generator=g)
    counts = DatasetCounts(np.array([int(target.sum())]), valid=72, all_zero=72 - int(target.sum()))
    class_map = build_weighting("class_map", counts, "binary", "pixels", CLAMP)
    glob = build_weighting("global", counts, "binary", "pixels", CLAMP)
    batch = {"target": target, "valid": valid}
    a, _ = weighted_bce(logits, target, valid, class_map.batch_weight(batch), "weight", normalize=True)
    b, _ = weighted_bce(logits, target, valid, glob.batch_weight(batch), "pos_weight", normalize=True)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_border_map_adds_the_border_term_on_valid_pixels():
    counts = DatasetCounts(np.array([2]), valid=4, all_zero=2)
    weighting = build_weighting("border_map", counts, "binary", "pixels", CLAMP)
    target = torch.tensor([[1.0, 0], [0, 1]]).view(1, 1, 2, 2)
    valid = torch.tensor([[True, True], [True, False]]).view(1, 1, 2, 2)
    term = torch.tensor([[0.5, 2.0], [0.0, 9.0]]).view(1, 1, 2, 2)
    weight = weighting.batch_weight({"target": target, "valid": valid, "weight_map": term})
    # balanced classes: median freq 0.5 / 0.5 = 1 for both; ignored pixel 0
    torch.testing.assert_close(weight, torch.tensor([[1.5, 3.0], [1.0, 0.0]]).view(1, 1, 2, 2))


def test_none_gives_no_weight():
    weighting = build_weighting("none", DatasetCounts(np.array([1]), 4, 3), "binary", "pixels", CLAMP)
    target, valid = masks()
    assert weighting.batch_weight({"target": target, "valid": valid}) is None
    assert weighting.reported_pos_weight() is None
