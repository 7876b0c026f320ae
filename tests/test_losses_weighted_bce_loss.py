"""Tests for seg/losses/weighted_bce_loss.py: WeightedBCELoss pinned against plain PyTorch (pos_weight reshaped to
(C,1,1) by hand, the valid mask applied by hand), its weight a buffer (state_dict, .to), and from_masks' weights
against counts worked out by hand and against the training's own strategies."""

import pytest
import torch
import torch.nn.functional as F

import seg
from seg.config import BASE_CONFIG, load_config, mask_spec, read_yaml
from seg.data.counts import MaskCounts
from seg.losses.weighted_bce_loss import DEFAULT_CLAMP, WeightedBCELoss, mask_counts
from seg.weighting.registry import build_strategy


def batch(channels: int = 3, width: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, channels, 4, width, generator=generator)
    target = (torch.rand(2, channels, 4, width, generator=generator) < 0.3).float()
    valid = torch.rand(2, 1, 4, width, generator=generator) < 0.7
    return logits, target, valid


def test_public_name_is_this_class():
    assert seg.WeightedBCELoss is WeightedBCELoss


def test_per_channel_weight_goes_on_the_channel_axis():
    """C == W: a [C] pos_weight on the channel axis (seg) differs from BCEWithLogitsLoss's, on the width."""
    logits, target, _ = batch(channels=3, width=3)
    weight = torch.tensor([1.0, 4.0, 20.0])
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight.view(3, 1, 1))
    got = WeightedBCELoss(weight)(logits, target)
    assert torch.allclose(got, expected, rtol=1e-6)
    wrong = torch.nn.BCEWithLogitsLoss(pos_weight=weight)(logits, target)  # broadcast against W, silently
    assert not torch.allclose(got, wrong, rtol=1e-3)
    assert torch.allclose(WeightedBCELoss(weight.view(3, 1, 1))(logits, target), expected, rtol=1e-6)


def test_valid_mask_by_hand_and_normalize():
    logits, target, valid = batch()
    weight = torch.tensor([2.0, 0.5, 9.0])
    elementwise = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight.view(3, 1, 1), reduction="none")
    mask = valid.float().expand_as(logits)
    assert torch.allclose(
        WeightedBCELoss(weight)(logits, target, valid), (elementwise * mask).sum() / mask.sum(), rtol=1e-6
    )
    applied = 1.0 + (weight.view(3, 1, 1) - 1.0) * target  # w on positives, 1 on negatives
    normalized = WeightedBCELoss(weight, normalize=True)(logits, target, valid)
    assert torch.allclose(normalized, (elementwise * mask).sum() / (applied * mask).sum(), rtol=1e-6)


def test_scalar_none_and_apply_as_weight():
    logits, target, valid = batch()
    plain = F.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(WeightedBCELoss()(logits, target), plain, rtol=1e-6)
    assert torch.allclose(WeightedBCELoss(1.0)(logits, target), plain, rtol=1e-6)  # invariance: weight 1 = none
    scalar = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(3.0))
    assert torch.allclose(WeightedBCELoss(3.0)(logits, target), scalar, rtol=1e-6)
    weight = torch.tensor([2.0, 0.5, 9.0])
    every = F.binary_cross_entropy_with_logits(logits, target, weight=weight.view(3, 1, 1))
    assert torch.allclose(WeightedBCELoss(weight, apply_as="weight")(logits, target), every, rtol=1e-6)


def test_gradient_flows_to_the_logits():
    logits, target, valid = batch()
    logits.requires_grad_(True)
    WeightedBCELoss(torch.tensor([2.0, 0.5, 9.0]))(logits, target, valid).backward()
    assert logits.grad is not None and (logits.grad[~valid.expand_as(logits)] == 0).all()


def test_the_weight_is_a_buffer_in_state_dict_and_follows_to():
    loss = WeightedBCELoss(torch.tensor([2.0, 0.5, 9.0]))
    assert list(loss.state_dict()) == ["criterion.strategy.fixed"] and list(loss.parameters()) == []
    other = WeightedBCELoss(torch.ones(3))
    other.load_state_dict(loss.state_dict())
    assert torch.equal(other.pos_weight, torch.tensor([2.0, 0.5, 9.0]).view(3, 1, 1))
    assert loss.double().pos_weight.dtype == torch.float64
    assert loss.to("meta").pos_weight.device.type == "meta"
    assert WeightedBCELoss().state_dict() == {}  # no weight: nothing to save


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"pos_weight must be None, a float, a \[C\]"):
        WeightedBCELoss(torch.ones(3, 4))
    with pytest.raises(ValueError, match="apply_as must be one of"):
        WeightedBCELoss(2.0, apply_as="both")
    with pytest.raises(ValueError, match=r"per-channel weight must have shape \(2, 1, 1\)"):
        WeightedBCELoss(torch.ones(3))(*batch(channels=2)[:2])


# ------------------------------------------------------------------ from_masks


def masks_by_hand():
    """2 images, 2 channels, 2x2: channel 0 has 2 positives, channel 1 one (overlapping channel 0's first)."""
    masks = torch.zeros(2, 2, 2, 2)
    masks[0, 0, 0, 0] = masks[0, 1, 0, 0] = 1
    masks[1, 0, 0, 1] = 1
    return masks  # 8 pixels; positives (2, 1); the union covers 2 pixels: 6 all-zero


def test_from_masks_weights_by_hand():
    masks = masks_by_hand()
    per_channel = WeightedBCELoss.from_masks(masks).pos_weight
    assert torch.allclose(per_channel, torch.tensor([6 / 2, 7 / 1]).view(2, 1, 1))
    overall = WeightedBCELoss.from_masks(masks, strategy="global").pos_weight
    assert overall.shape == () and torch.allclose(overall, torch.tensor(13 / 3))
    all_zero = WeightedBCELoss.from_masks(masks, negatives="all_zero").pos_weight
    assert torch.allclose(all_zero, torch.tensor([6 / 2, 6 / 1]).view(2, 1, 1))
    valid = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    valid[1, 0, 0, 1] = False  # leaves out channel 0's second positive: 7 valid pixels
    assert torch.allclose(
        WeightedBCELoss.from_masks(masks, valid=valid).pos_weight, torch.tensor([6.0, 6.0]).view(2, 1, 1)
    )
    clamped = WeightedBCELoss.from_masks(masks, clamp=(0.5, 5.0)).pos_weight
    assert torch.allclose(clamped, torch.tensor([3.0, 5.0]).view(2, 1, 1))
    assert torch.equal(WeightedBCELoss.from_masks(masks * 255).pos_weight, per_channel)  # 0/255 masks: the same
    loss = WeightedBCELoss.from_masks(masks, apply_as="weight", normalize=True)
    assert loss.criterion.apply_as == "weight" and loss.criterion.normalize


def test_from_masks_of_counts_equals_from_the_masks():
    masks = masks_by_hand()
    counts = MaskCounts(2, positive_pixels=torch.tensor([2, 1]).numpy(), valid_pixels=8, all_zero_pixels=6)
    for strategy in ("per_channel", "global"):
        assert torch.equal(
            WeightedBCELoss.from_masks(counts, strategy).pos_weight,
            WeightedBCELoss.from_masks(masks, strategy).pos_weight,
        )
    measured = mask_counts(masks)
    assert measured.positive_pixels.tolist() == [2, 1] and measured.valid_pixels == 8 and measured.all_zero_pixels == 6
    assert measured.images == 2 and measured.images_with_positives.tolist() == [2, 1] and measured.total_pixels == 8


@pytest.mark.parametrize("strategy", ["per_channel", "global"])
@pytest.mark.parametrize("negatives", ["pixels", "all_zero"])
def test_from_masks_equals_the_training_strategy(strategy, negatives):
    """The weight a run with loss.weighting=<strategy> builds from the same counts (seg.weighting.registry)."""
    masks = (torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.1).float()
    cfg = load_config(BASE_CONFIG, [f"loss.weighting={strategy}", f"loss.negatives={negatives}"])
    trained = build_strategy(cfg.loss, mask_counts(masks), mask_spec(cfg)).batch_weight({})
    assert torch.equal(WeightedBCELoss.from_masks(masks, strategy, negatives=negatives).pos_weight, trained)


def test_from_masks_empty_channel_takes_the_clamp_maximum_with_a_warning():
    masks = torch.cat([masks_by_hand(), torch.zeros(2, 1, 2, 2)], dim=1)
    with pytest.warns(UserWarning, match=r"channel\(s\) 2 have no positive pixels"):
        weight = WeightedBCELoss.from_masks(masks).pos_weight
    assert weight.flatten().tolist() == [3.0, 7.0, DEFAULT_CLAMP[1]]


def test_from_masks_refuses_bad_arguments():
    masks = masks_by_hand()
    with pytest.raises(ValueError, match="strategy must be one of"):
        WeightedBCELoss.from_masks(masks, strategy="border_map")
    with pytest.raises(ValueError, match="clamp must be"):
        WeightedBCELoss.from_masks(masks, clamp=(10.0, 1.0))
    with pytest.raises(ValueError, match="negatives must be one of"):
        WeightedBCELoss.from_masks(masks, negatives="none")
    with pytest.raises(ValueError, match=r"masks must be \[N,C,H,W\]"):
        WeightedBCELoss.from_masks(masks[0])
    with pytest.raises(ValueError, match=r"valid must be \[N,1,H,W\]"):
        WeightedBCELoss.from_masks(masks, valid=torch.ones(2, 2, 2, 2, dtype=torch.bool))


def test_default_clamp_is_base_yaml_loss_clamp():
    assert list(DEFAULT_CLAMP) == read_yaml(BASE_CONFIG)["loss"]["clamp"]
