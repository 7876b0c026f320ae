"""Tests for seg/weighting/strategies/per_channel.py: neg_c / pos_c per channel by hand, global on one channel."""

import pytest
import torch
from conftest import DATASET, build, counts, masks


@pytest.mark.parametrize("negatives, expected", [("pixels", [4 / 3, 6 / 1]), ("all_zero", [4 / 3, 4 / 1])])
def test_per_channel_by_hand(negatives, expected):
    strategy = build("per_channel", DATASET, negatives=negatives)
    weight = strategy.batch_weight(masks())
    assert weight.shape == (2, 1, 1)
    torch.testing.assert_close(weight.flatten(), torch.tensor(expected))
    assert strategy.report({}, ["a", "b"]) == {"pos_weight": pytest.approx(expected)}


def test_per_channel_with_one_channel_equals_global():
    mask_counts = counts([30], valid=100, all_zero=70)
    glob = build("global", mask_counts, "binary")
    chan = build("per_channel", mask_counts, "binary")
    assert glob.fixed.item() == pytest.approx(70 / 30)
    assert chan.fixed.shape == (1, 1, 1) and chan.fixed.item() == pytest.approx(glob.fixed.item())
    assert glob.report({}, ["a"])["pos_weight"] == pytest.approx(70 / 30)
    assert chan.report({}, ["a"])["pos_weight"] == pytest.approx([70 / 30])


def test_a_channel_without_positives_warns_and_takes_the_clamp_max():
    with pytest.warns(UserWarning, match=r"channel\(s\) 1 have no positive pixels.*clamped to 1000.0"):
        strategy = build("per_channel", counts([3, 0], valid=7, all_zero=4))
    assert strategy.fixed.flatten().tolist() == [pytest.approx(4 / 3), 1000.0]
