"""Tests for seg/weighting/strategies/class_map.py: class counts per format, median-frequency maps by hand."""

import numpy as np
import pytest
import torch
from conftest import build, counts

from seg.config import MaskSpec
from seg.losses import weighted_bce
from seg.weighting.strategies.class_map import class_counts


def test_class_counts_per_format():
    mask_counts = counts([30, 5], valid=100, all_zero=68)
    np.testing.assert_array_equal(class_counts(mask_counts, MaskSpec("multilabel", ("a", "b"))), [30, 5, 68])
    np.testing.assert_array_equal(class_counts(mask_counts, MaskSpec("index", ("a", "b"))), [30, 5])
    for fmt in ("binary", "instance"):
        per_class = class_counts(counts([20], valid=100, all_zero=80), MaskSpec(fmt, ("a",)))
        np.testing.assert_array_equal(per_class, [80, 20])


def test_class_map_by_hand():
    # binary, 20 positives of 100: freqs .8 .2, median .5 -> weights .625 (negative), 2.5 (positive)
    strategy = build("class_map", counts([20], valid=100, all_zero=80), "binary")
    torch.testing.assert_close(strategy.class_weights, torch.tensor([0.625, 2.5]))
    batch = {"target": torch.tensor([[1.0, 0], [0, 1]]).view(1, 1, 2, 2), "valid": torch.ones(1, 1, 2, 2, dtype=bool)}
    batch["valid"][0, 0, 1, 1] = False
    torch.testing.assert_close(
        strategy.batch_weight(batch), torch.tensor([[2.5, 0.625], [0.625, 0.0]]).view(1, 1, 2, 2)
    )
    sums = weighted_bce(
        torch.zeros(1, 1, 2, 2), batch["target"], batch["valid"], strategy.batch_weight(batch), "weight"
    )[1]
    report = strategy.report({"sums": sums, "map_max": 2.5}, ["a"])
    assert report == {
        "pos_weight": None,
        "weight_map_stats": {"a": {"mean": pytest.approx((2.5 + 0.625 + 0.625) / 3), "max": 2.5}},
        "class_weights": [0.625, 2.5],
    }


def test_class_map_on_binary_with_normalize_equals_global():
    """On binary masks class_map (as weight) with normalize equals global pos_weight."""
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 1, 6, 6, generator=g) > 0.7).float()
    valid = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    logits = torch.randn(2, 1, 6, 6, generator=g)
    mask_counts = counts([int(target.sum())], valid=72, all_zero=72 - int(target.sum()))
    class_map = build("class_map", mask_counts, "binary")
    glob = build("global", mask_counts, "binary")
    batch = {"target": target, "valid": valid}
    a, _ = weighted_bce(logits, target, valid, class_map.batch_weight(batch), "weight", normalize=True)
    b, _ = weighted_bce(logits, target, valid, glob.batch_weight(batch), "pos_weight", normalize=True)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
