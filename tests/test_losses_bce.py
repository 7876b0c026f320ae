"""Tests for seg/losses/bce.py and seg/losses/criterion.py: weighted BCE against an independent plain-PyTorch
formula; the repetition identity; normalisation; the criterion module (its strategy's buffers follow .to and
state_dict)."""

import numpy as np
import pytest
import torch

from seg.config import MaskSpec
from seg.config.schema import LossConfig
from seg.data.counts import MaskCounts
from seg.losses import Criterion, weighted_bce
from seg.losses.bce import weight_sums
from seg.weighting.registry import build_strategy


def reference(x, y, q=None, w=None, valid=None, normalize=False):
    """-[q*y*log s(x) + (1-y)*log(1-s(x))] * w, written out by hand (no F.binary_cross_entropy)."""
    q = torch.ones(()) if q is None else q
    w = torch.ones(()) if w is None else w
    s = 1.0 / (1.0 + torch.exp(-x.double()))
    y = y.double()
    loss = -(q * y * torch.log(s) + (1 - y) * torch.log(1 - s)) * w
    mask = torch.ones_like(x[:, :1]) if valid is None else valid
    mask = mask.double().expand_as(loss)
    applied = (1 + (q - 1) * y) * w
    denominator = (applied * mask).sum() if normalize else mask.sum()
    return (loss * mask).sum() / denominator


@pytest.fixture
def batch(logits_batch):
    return logits_batch


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("kind", ["scalar", "channel", "map"])
@pytest.mark.parametrize(("apply_as", "map_seed"), [("pos_weight", 1), ("weight", 2)])
def test_weighting_matches_formula(batch, kind, normalize, apply_as, map_seed):
    x, y, valid = batch
    weight = {
        "scalar": torch.tensor(3.0),
        "channel": torch.tensor([2.0, 5.0, 0.5]).view(3, 1, 1),
        "map": torch.rand(2, 1, 5, 4, generator=torch.Generator().manual_seed(map_seed)) * 4,
    }[kind]
    loss, _ = weighted_bce(x, y, valid, weight, apply_as, normalize)
    given = {"q" if apply_as == "pos_weight" else "w": weight.double()}
    assert loss.item() == pytest.approx(reference(x, y, **given, valid=valid, normalize=normalize).item(), rel=1e-5)


def test_soft_labels(batch):
    x, _, valid = batch
    y = torch.rand_like(x)
    q = torch.tensor([2.0, 5.0, 0.5]).view(3, 1, 1)
    loss, _ = weighted_bce(x, y, valid, q, "pos_weight", True)
    assert loss.item() == pytest.approx(reference(x, y, q=q.double(), valid=valid, normalize=True).item(), rel=1e-5)


def test_pos_weight_equals_repeating_positives():
    """The docs' claim: 100 positives + 300 negatives with pos_weight 3 == every positive repeated 3 times."""
    g = torch.Generator().manual_seed(3)
    x_pos, x_neg = torch.randn(100, generator=g), torch.randn(300, generator=g)
    x = torch.cat([x_pos, x_neg]).view(1, 1, 1, 400).requires_grad_()
    y = torch.cat([torch.ones(100), torch.zeros(300)]).view(1, 1, 1, 400)
    weighted, _ = weighted_bce(x, y, None, torch.tensor(3.0), "pos_weight", normalize=True)
    weighted_sum = weighted * (3 * 100 + 300)  # normalize divides by sum of applied weights = 600

    x_rep = torch.cat([x_pos.repeat(3), x_neg]).view(1, 1, 1, 600).requires_grad_()
    y_rep = torch.cat([torch.ones(300), torch.zeros(300)]).view(1, 1, 1, 600)
    repeated_sum = torch.nn.functional.binary_cross_entropy_with_logits(x_rep, y_rep, reduction="sum")
    assert weighted_sum.item() == pytest.approx(repeated_sum.item(), rel=1e-6)

    weighted_sum.backward()
    repeated_sum.backward()
    grad_rep = x_rep.grad.view(-1)
    grad_pos_rep = grad_rep[:300].view(3, 100).sum(dim=0)  # the three copies of each positive
    torch.testing.assert_close(x.grad.view(-1)[:100], grad_pos_rep, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.view(-1)[100:], grad_rep[300:], rtol=1e-5, atol=1e-6)
    # under 'mean' the two differ by the element count (400 vs 600): the loss-scale effect
    unnormalized, _ = weighted_bce(x, y, None, torch.tensor(3.0), "pos_weight", normalize=False)
    assert (unnormalized * 400).item() == pytest.approx(repeated_sum.item(), rel=1e-6)


def test_ignored_pixels_contribute_nothing(batch):
    x, y, valid = batch
    x2 = torch.where(valid, x, torch.full_like(x, 1e3))  # wild logits on ignored pixels
    y2 = torch.where(valid, y, 1 - y)
    a, _ = weighted_bce(x, y, valid, torch.tensor(2.0))
    b, _ = weighted_bce(x2, y2, valid, torch.tensor(2.0))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_uniform_weight_equals_no_weight_when_normalized(batch):
    x, y, valid = batch
    plain, _ = weighted_bce(x, y, valid, None, normalize=True)
    ones, _ = weighted_bce(x, y, valid, torch.ones(2, 1, 5, 4), "weight", normalize=True)
    fives, _ = weighted_bce(x, y, valid, torch.tensor(5.0), "weight", normalize=True)
    assert plain.item() == pytest.approx(ones.item(), rel=1e-6) == pytest.approx(fives.item(), rel=1e-6)


def test_effective_pos_weight_and_mean_applied_weight():
    x = torch.zeros(1, 2, 1, 4)
    y = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0]]).view(1, 2, 1, 4)
    q = torch.tensor([3.0, 2.0]).view(2, 1, 1)
    _, sums = weighted_bce(x, y, None, q, "pos_weight")
    torch.testing.assert_close(sums.effective_pos_weight(), torch.tensor([3.0, 2.0], dtype=torch.float64))
    # applied weights: channel 0: 3 + 1+1+1 = 6; channel 1: 2+2 + 1+1 = 6; 12 over 8 elements
    assert sums.mean_applied_weight().item() == pytest.approx(1.5)
    _, sums = weighted_bce(x, y, None, q, "weight")  # the same weight on both classes: ratio 1
    torch.testing.assert_close(sums.effective_pos_weight(), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["none", "scalar", "channel", "map"])
def test_weight_sums_are_the_sums_of_the_weight_over_valid_positives_and_negatives(kind):
    """weight_sums multiplies per-channel counts for a weight without pixels (None, scalar, (C,1,1)) and a map
    pixel by pixel: either way the sums written out over every element (float64), soft labels counting
    fractionally."""
    g = torch.Generator().manual_seed(4)
    target = torch.rand(2, 3, 5, 4, generator=g)
    mask = (torch.rand(2, 1, 5, 4, generator=g) > 0.3).float()
    weight = {
        "none": None,
        "scalar": torch.tensor(3.0),
        "channel": torch.tensor([2.0, 5.0, 0.5]).view(3, 1, 1),
        "map": torch.rand(2, 1, 5, 4, generator=g) * 4,
    }[kind]
    every = (torch.ones(()) if weight is None else weight).double().expand(2, 3, 5, 4)
    positive, negative = target.double() * mask.double(), (1 - target.double()) * mask.double()
    expected = [(every * positive), positive, (every * negative), negative]
    sums = weight_sums(target, mask, weight, weight)
    for got, want in zip(sums.as_tuple(), expected, strict=True):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want.sum(dim=(0, 2, 3)), rtol=1e-6, atol=1e-9)


def test_no_weight_is_a_unit_pos_weight(batch):
    """Without a weight the loss, its gradient and the sums are those of pos_weight 1 (the plain BCE path)."""
    x, y, valid = batch
    plain_x, unit_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    plain, plain_sums = weighted_bce(plain_x, y, valid, None)
    unit, unit_sums = weighted_bce(unit_x, y, valid, torch.tensor(1.0))
    torch.testing.assert_close(plain, unit)
    plain.backward()
    unit.backward()
    torch.testing.assert_close(plain_x.grad, unit_x.grad)
    for a, b in zip(plain_sums.as_tuple(), unit_sums.as_tuple(), strict=True):
        torch.testing.assert_close(a, b)


def test_one_dimensional_channel_weight_is_refused_even_when_c_equals_w():
    x = torch.zeros(1, 4, 3, 4)
    with pytest.raises(ValueError, match="broadcasts against the image width.*silently here, since C == W"):
        weighted_bce(x, torch.zeros_like(x), None, torch.ones(4))
    with pytest.raises(ValueError, match=r"use shape \(4, 1, 1\)"):
        weighted_bce(torch.zeros(1, 4, 3, 5), torch.zeros(1, 4, 3, 5), None, torch.ones(4))
    with pytest.raises(ValueError, match="per-channel weight must have shape"):
        weighted_bce(x, torch.zeros_like(x), None, torch.ones(3, 1, 1))


# ------------------------------------------------------------------------------ the criterion


def criterion(weighting, apply_as="pos_weight", normalize=False, ema=None):
    """Criterion with a strategy built from made-up counts of 3 multilabel channels."""
    loss = LossConfig.model_validate(
        {
            "weighting": weighting,
            "apply_as": apply_as,
            "negatives": "pixels",
            "clamp": (0.001, 1000.0),
            "normalize": normalize,
            "stats_file": None,
            "ema": ema,
            "border": {"instances_from": "instance", "connectivity": 4, "w0": 10.0, "sigma": 5.0},
        }
    )
    counts = MaskCounts(3, positive_pixels=np.array([10, 40, 5]), valid_pixels=100, all_zero_pixels=50)
    strategy = build_strategy(loss, counts, MaskSpec("multilabel", ("a", "b", "c")))
    return Criterion(strategy, apply_as, normalize)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("apply_as", ["pos_weight", "weight"])
@pytest.mark.parametrize("weighting", ["none", "global", "per_channel", "per_batch", "class_map"])
def test_criterion_equals_weighted_bce_with_its_strategy_weight(batch, weighting, apply_as, normalize):
    x, y, valid = batch
    module = criterion(weighting, apply_as, normalize)
    reference_strategy = criterion(weighting).strategy  # a twin: per_batch keeps state between calls
    loss, sums, weight = module(x, {"target": y, "valid": valid})
    expected_weight = reference_strategy.batch_weight({"target": y, "valid": valid})
    expected, expected_sums = weighted_bce(x, y, valid, expected_weight, apply_as, normalize)
    assert torch.equal(loss, expected)
    assert all(torch.equal(a, b) for a, b in zip(sums.as_tuple(), expected_sums.as_tuple(), strict=True))
    assert (weight is None and expected_weight is None) or torch.equal(weight, expected_weight)


def test_criterion_buffers_follow_to_and_state_dict():
    module = criterion("per_batch", ema=0.9)
    assert set(module.state_dict()) == {
        "strategy.dataset_pos_weight",
        "strategy.previous",
        "strategy.has_previous",
    }
    assert {name for name, _ in module.named_buffers()} == set(module.state_dict())
    g = torch.Generator().manual_seed(3)
    batches = [{"target": (torch.rand(2, 3, 4, 4, generator=g) > 0.6).float()} for _ in range(3)]
    for batch in batches:
        batch["valid"] = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    logits = torch.zeros(2, 3, 4, 4)
    for batch in batches[:2]:
        module(logits, batch)
    # a fresh criterion loaded with the state continues the EMA exactly where it was
    resumed = criterion("per_batch", ema=0.9)
    resumed.load_state_dict(module.state_dict())
    assert bool(resumed.strategy.has_previous) and not bool(criterion("per_batch", ema=0.9).strategy.has_previous)
    assert torch.equal(resumed(logits, batches[2])[2], module(logits, batches[2])[2])
    # .to moves every buffer (the meta device needs no accelerator) and casts the float ones
    moved = criterion("class_map").to(torch.float64)
    assert moved.strategy.class_weights.dtype == torch.float64
    on_meta = criterion("per_batch", ema=0.9).to("meta")
    assert all(buffer.device.type == "meta" for buffer in on_meta.buffers())


def test_criterion_refuses_an_unknown_apply_as():
    with pytest.raises(ValueError, match="apply_as must be one of"):
        Criterion(criterion("none").strategy, "both")
