"""Tests for seg/engine.py: train_one_epoch, train_step and evaluate on a tiny model and hand-made batches,
against the same steps written in plain PyTorch; the finite-loss guard. (No host sync in train_step:
tests/test_host_sync.py.)"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import loss_config

from seg.config import MaskSpec
from seg.data.counts import MaskCounts
from seg.engine import EpochState, StepOptions, evaluate, train_one_epoch, train_step
from seg.errors import TrainingDiverged
from seg.losses import Criterion
from seg.scoring.validation import Evaluator
from seg.weighting.registry import build_strategy

OPTIONS = StepOptions(torch.device("cpu"), channels_last=False, progress=False)


def criterion(weighting: str) -> Criterion:
    counts = MaskCounts(2, positive_pixels=np.array([20, 5]), valid_pixels=100, all_zero_pixels=78)
    return Criterion(build_strategy(loss_config(weighting), counts, MaskSpec("multilabel", ("a", "b"))))


def batches(count: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        image = torch.randn(2, 3, 6, 6, generator=g)
        target = (torch.rand(2, 2, 6, 6, generator=g) > 0.7).float()
        valid = torch.rand(2, 1, 6, 6, generator=g) > 0.2
        out.append({"image": image, "target": target, "valid": valid})
    return out


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 2, kernel_size=1)


def sgd(net: torch.nn.Module):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


PER_CHANNEL = torch.tensor([4.0, 19.0]).view(2, 1, 1)  # per_channel's pos_weight neg_c / pos_c = (80/20, 95/5)


def per_channel_by_hand(twin: torch.nn.Module, data: list[dict]) -> tuple[list[float], list[float]]:
    """The steps of train_one_epoch with per_channel weights in plain PyTorch (SGD, lr 0.5): each step's loss
    (the weighted BCE's mean over valid elements) and mean applied weight (pos_weight on positives, 1 else)."""
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.5)
    losses, weights = [], []
    for batch in data:
        logits = twin(batch["image"])
        elementwise = F.binary_cross_entropy_with_logits(
            logits, batch["target"], pos_weight=PER_CHANNEL, reduction="none"
        )
        mask = batch["valid"].float().expand_as(elementwise)
        loss = (elementwise * mask).sum() / mask.sum()
        twin_optimizer.zero_grad()
        loss.backward()
        twin_optimizer.step()
        losses.append(loss.item())
        applied = batch["target"] * PER_CHANNEL + (1 - batch["target"])
        weights.append(float((applied * mask).sum() / mask.sum()))
    return losses, weights


def test_train_one_epoch_is_the_plain_pytorch_loop():
    data = batches()
    net, twin = model(), model()
    optimizer, scheduler = sgd(net)
    result = train_one_epoch(net, data, optimizer, scheduler, criterion("per_channel"), OPTIONS)

    losses, _ = per_channel_by_hand(twin, data)
    assert result["steps"] == 3
    assert result["loss"] == pytest.approx(float(np.mean(losses)), rel=1e-6)
    for trained, by_hand in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(trained, by_hand)
    assert result["mean_channel_weight"] == pytest.approx([4.0, 19.0])
    assert result["map_max"] == 0.0  # no map was applied
    # the effective pos_weight measured from the sums is the pos_weight applied
    assert result["sums"].effective_pos_weight().tolist() == pytest.approx([4.0, 19.0])
    assert 0.0 <= result["dice"] <= 1.0


def test_train_one_epoch_stops_at_max_steps_and_reports_a_map_maximum():
    net = model()
    optimizer, scheduler = sgd(net)
    options = StepOptions(torch.device("cpu"), channels_last=False, progress=False, max_steps=2)
    result = train_one_epoch(net, batches(), optimizer, scheduler, criterion("class_map"), options)
    assert result["steps"] == 2 and result["mean_channel_weight"] is None
    # median-frequency weights of (a, b, background) = (20, 5, 78): the rarest class b weighs most
    assert result["map_max"] == pytest.approx(float(criterion("class_map").strategy.class_weights.max()))


def test_a_non_finite_loss_raises_with_its_step():
    data = batches()
    data[1]["image"] = data[1]["image"] * float("nan")
    net = model()
    optimizer, scheduler = sgd(net)
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 2") as info:
        train_one_epoch(net, data, optimizer, scheduler, criterion("none"), OPTIONS)
    assert info.value.step == 2


def test_evaluate_returns_the_unweighted_bce_over_valid_pixels():
    data, net = batches(2), model()
    evaluator = Evaluator(2, torch.device("cpu"))
    got = evaluate(copy.deepcopy(net), data, evaluator, OPTIONS)
    with torch.no_grad():
        total = sum(
            (F.binary_cross_entropy_with_logits(net(b["image"]), b["target"], reduction="none") * b["valid"]).sum()
            for b in data
        )
    pixels = sum(int(b["valid"].sum()) * 2 for b in data)
    assert got == pytest.approx(float(total) / pixels, rel=1e-6)


def test_the_step_log_gets_each_intervals_means_and_the_lr():
    data = batches(5)
    net = model()
    optimizer, scheduler = sgd(net)
    calls = []
    options = StepOptions(
        torch.device("cpu"), channels_last=False, progress=False, log_every=2, on_log=lambda *a: calls.append(a)
    )
    train_one_epoch(net, data, optimizer, scheduler, criterion("per_channel"), options)
    losses, weights = per_channel_by_hand(model(), data)
    assert [step for step, _ in calls] == [2, 4]  # the fifth step starts an interval that does not end
    for (_, values), start in zip(calls, (0, 2), strict=True):
        assert values["loss"] == pytest.approx(np.mean(losses[start : start + 2]), rel=1e-6)
        assert values["weight"] == pytest.approx(np.mean(weights[start : start + 2]), rel=1e-6)
        assert values["lr"] == 0.5
    calls.clear()
    train_one_epoch(
        net, data, optimizer, scheduler, criterion("none"), StepOptions(**{**vars(options), "on_log": None})
    )
    assert calls == []  # no callback: nothing is read per interval


def test_train_step_adds_each_step_to_the_state_and_leaves_the_checks_to_the_epoch():
    """The steps of train_one_epoch one by one: the plain PyTorch steps and their sums; a non-finite loss is
    only recorded (its 1-based step in first_bad), not raised: the epoch loop reads it at its interval."""
    data = batches()
    net, twin = model(), model()
    optimizer, scheduler = sgd(net)
    loss_fn = criterion("per_channel")
    state = EpochState.start(OPTIONS.device, 1)
    returned = [train_step(net, batch, optimizer, scheduler, loss_fn, OPTIONS, state) for batch in data[:2]]

    losses, _ = per_channel_by_hand(twin, data[:2])
    assert state.steps == 2 and int(state.first_bad) == -1 and not returned[0].requires_grad
    assert [float(loss) for loss in returned] == pytest.approx(losses, rel=1e-6)
    assert float(state.loss_sum) == pytest.approx(sum(losses), rel=1e-6) == float(state.term_sum[0])
    for trained, by_hand in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(trained, by_hand)
    assert state.channel_weight_sum.tolist() == pytest.approx([8.0, 38.0])  # two steps of (4, 19)
    assert state.counts is not None and int(state.counts.sum()) == sum(int(b["valid"].sum()) * 2 for b in data[:2])

    nan_batch = {**data[2], "image": data[2]["image"] * float("nan")}
    train_step(net, nan_batch, optimizer, scheduler, loss_fn, OPTIONS, state)
    assert state.steps == 3 and int(state.first_bad) == 3
