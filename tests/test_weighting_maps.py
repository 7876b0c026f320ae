"""Tests for seg/weighting/maps.py: median-frequency weights and the class weight map, by hand."""

import functools

import numpy as np
import pytest
import torch

from seg.weighting.maps import class_weight_map, median_frequency_weights

# ------------------------------------------------------------------ median-frequency weights


def test_median_frequency_weights_by_hand():
    # freqs .1 .3 .6, median .3 -> .3/.1, .3/.3, .3/.6
    np.testing.assert_allclose(median_frequency_weights(np.array([10, 30, 60])), [3.0, 1.0, 0.5])
    # even K: freqs .25 .75, median .5 -> [2, 2/3]
    np.testing.assert_allclose(median_frequency_weights(np.array([10, 30])), [2.0, 2.0 / 3.0])
    # SegNet's definition: freqs 10/100 = .1 and 30/60 = .5, median .3 -> [3, .6]
    np.testing.assert_allclose(median_frequency_weights(np.array([10, 30]), np.array([100, 60])), [3.0, 0.6])


def test_median_frequency_weights_absent_class_is_inf():
    # the median is over present classes only (.1 .3 .6 -> .3); the absent class gets inf
    weights = median_frequency_weights(np.array([10, 0, 30, 60]))
    np.testing.assert_allclose(weights, [3.0, np.inf, 1.0, 0.5])
    weights = median_frequency_weights(np.array([10, 0, 30]), np.array([100, 0, 60]))
    np.testing.assert_allclose(weights, [3.0, np.inf, 0.6])
    with pytest.raises(ValueError, match="no class"):
        median_frequency_weights(np.array([0, 0]))


# --------------------------------------------------------------------------- class weight map


def binary_example():
    target = torch.tensor([[[[1.0, 0.0, 1.0], [0.0, 0.6, 0.4]]]])  # [1,1,2,3], soft at >= 0.5
    valid = torch.tensor([[[[True, True, False], [True, True, True]]]])
    return target, valid, torch.tensor([0.5, 3.0])


def index_example():
    classes = torch.tensor([[[0, 2], [1, 2]], [[1, 1], [0, 0]]])  # [B=2,H,W]
    target = torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float()  # [2,3,2,2]
    valid = torch.tensor([[[True, True], [True, False]], [[True, True], [True, True]]]).unsqueeze(1)
    return target, valid, torch.tensor([1.0, 2.0, 4.0])


def multilabel_example():
    channel0 = [[1.0, 0.0], [1.0, 0.0]]
    channel1 = [[1.0, 1.0], [0.0, 0.0]]
    target = torch.tensor([[channel0, channel1]])  # [1,2,2,2], (0,0) in both channels
    valid = torch.tensor([[[[True, True], [True, True]]]])
    return target, valid, torch.tensor([2.0, 5.0, 0.5])  # channel 0, channel 1, background


EXAMPLES = {
    # w_neg = .5, w_pos = 3; (0, 2) is ignored
    "binary": (binary_example, [[[[3.0, 0.5, 0.0], [0.5, 3.0, 0.5]]]]),
    # classes [[0,2],[1,2]] -> [[1,4],[2,4]] with (1,1) ignored; [[1,1],[0,0]] -> [[2,2],[1,1]]
    "index": (index_example, [[[[1.0, 4.0], [2.0, 0.0]]], [[[2.0, 2.0], [1.0, 1.0]]]]),
    # (0,0) in both: max(2, 5) = 5; (0,1) channel 1: 5; (1,0) channel 0: 2; (1,1) none: .5
    "multilabel": (multilabel_example, [[[[5.0, 5.0], [2.0, 0.5]]]]),
}


@pytest.mark.parametrize("mask_format", sorted(EXAMPLES))
def test_class_weight_map_by_hand(mask_format):
    make, expected = EXAMPLES[mask_format]
    target, valid, class_weights = make()
    weight = class_weight_map(target, valid, class_weights, mask_format)
    assert weight.shape == (target.shape[0], 1, *target.shape[2:])
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, torch.tensor(expected))
    # valid=None: every pixel is weighted
    unmasked = class_weight_map(target, None, class_weights, mask_format)
    torch.testing.assert_close(unmasked[valid], torch.tensor(expected)[valid])
    assert (unmasked > 0).all()


@pytest.mark.parametrize("mask_format", sorted(EXAMPLES))
def test_class_weight_map_uniform_weights_are_no_weighting(mask_format):
    # invariance: all-ones class weights give 1 on valid pixels and 0 on ignored ones
    target, valid, class_weights = EXAMPLES[mask_format][0]()
    weight = class_weight_map(target, valid, torch.ones_like(class_weights), mask_format)
    torch.testing.assert_close(weight, valid.float())


@pytest.mark.parametrize("mask_format", sorted(EXAMPLES))
def test_class_weight_map_compiles_without_host_sync(mask_format):
    target, valid, class_weights = EXAMPLES[mask_format][0]()
    compiled = torch.compile(
        functools.partial(class_weight_map, mask_format=mask_format), fullgraph=True, backend="eager"
    )
    torch.testing.assert_close(
        compiled(target, valid, class_weights), class_weight_map(target, valid, class_weights, mask_format)
    )


def test_class_weight_map_refuses_mismatches():
    target, valid, _ = multilabel_example()
    with pytest.raises(ValueError, match="3 class weights"):
        class_weight_map(target, valid, torch.ones(2), "multilabel")
    with pytest.raises(ValueError, match="C == 1"):
        class_weight_map(target, valid, torch.ones(2), "binary")
    with pytest.raises(ValueError, match="mask_format"):
        class_weight_map(target, valid, torch.ones(3), "softmax")


def test_instance_masks_weight_like_binary_masks():
    # an instance mask's target is its binary foreground: the same two class weights apply
    target, valid, class_weights = EXAMPLES["binary"][0]()
    torch.testing.assert_close(
        class_weight_map(target, valid, class_weights, "instance"),
        class_weight_map(target, valid, class_weights, "binary"),
        rtol=0,
        atol=0,
    )
