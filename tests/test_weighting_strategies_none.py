"""Tests for seg/weighting/strategies/none.py: no weight, no state, no per-sample map (the baseline)."""

from conftest import build, counts, loss_config, masks


def test_none_gives_no_weight():
    strategy = build("none", counts([1], 4, 3), "binary")
    assert strategy.batch_weight(masks()) is None
    assert strategy.report({}, ["a"]) == {"pos_weight": None}
    assert dict(strategy.state_dict()) == {}
    assert not strategy.needs_instances(loss_config()) and strategy.sample_map(loss_config(), None) is None
