"""Tests for seg/weighting/strategies/border_map.py: class weights plus the border term, config checks, cache."""

import numpy as np
import pytest
import torch
from conftest import REPO, build, counts, loss_config

from seg.config import ConfigError, load_config
from seg.weighting.border import border_weight_map, connected_instances
from seg.weighting.registry import check_config, get_strategy


def test_border_map_adds_the_border_term_on_valid_pixels():
    strategy = build("border_map", counts([2], valid=4, all_zero=2), "binary")
    target = torch.tensor([[1.0, 0], [0, 1]]).view(1, 1, 2, 2)
    valid = torch.tensor([[True, True], [True, False]]).view(1, 1, 2, 2)
    term = torch.tensor([[0.5, 2.0], [0.0, 9.0]]).view(1, 1, 2, 2)
    weight = strategy.batch_weight({"target": target, "valid": valid, "weight_map": term})
    # balanced classes: median freq 0.5 / 0.5 = 1 for both; ignored pixel 0
    torch.testing.assert_close(weight, torch.tensor([[1.5, 3.0], [1.0, 0.0]]).view(1, 1, 2, 2))


def test_border_map_config_checks_and_instances():
    border_map = get_strategy("border_map")
    with pytest.raises(ValueError, match="border_map needs instances; index masks"):
        border_map.check_config(loss_config("border_map"), "index")
    with pytest.raises(ValueError, match="positive .connected components of one class. needs a binary mask"):
        border_map.check_config(loss_config("border_map", instances_from="positive"), "multilabel")
    border_map.check_config(loss_config("border_map", instances_from="positive"), "binary")
    border_map.check_config(loss_config("border_map"), "multilabel")
    assert border_map.needs_instances(loss_config("border_map"))
    assert not border_map.needs_instances(loss_config("border_map", instances_from="negative"))
    with pytest.raises(ConfigError, match="border_map needs instances"):
        check_config(load_config(REPO / "configs" / "camvid.yaml", ["loss.weighting=border_map"]))


def test_border_map_sample_map_is_the_cached_border_term(tmp_path):
    class Sample:  # what the dataset passes: the mask file is the cache key
        masks = (tmp_path / "mask.png",)
        instances = None

    Sample.masks[0].write_bytes(b"mask")
    target = np.zeros((12, 12, 1), np.uint8)
    target[2:5, 2:5] = target[2:5, 7:10] = 1  # two squares 2 px apart
    valid = np.ones((12, 12), bool)
    loss = loss_config("border_map", instances_from="positive")
    sample_map = get_strategy("border_map").sample_map(loss, tmp_path / "cache")
    expected = border_weight_map(connected_instances(target[..., 0] > 0, 4), 10.0, 5.0)
    np.testing.assert_array_equal(sample_map(Sample, target, valid), expected)
    assert expected.max() > 1 and len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert get_strategy("class_map").sample_map(loss, tmp_path) is None
