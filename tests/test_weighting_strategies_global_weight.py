"""Tests for seg/weighting/strategies/global_weight.py: one pos_weight pooled over the channels, by hand."""

import pytest
from conftest import DATASET, build, masks


@pytest.mark.parametrize("negatives, expected", [("pixels", (4 + 6) / (3 + 1)), ("all_zero", (4 + 4) / (3 + 1))])
def test_global_pools_the_channels(negatives, expected):
    strategy = build("global", DATASET, negatives=negatives)
    weight = strategy.batch_weight(masks())
    assert weight.shape == () and weight.item() == pytest.approx(expected)
    assert strategy.report({}, ["a", "b"]) == {"pos_weight": pytest.approx(expected)}
