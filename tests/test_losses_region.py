"""Tests for seg/losses/region.py: soft Dice and (focal) Tversky against plain-Python loops and hand numbers
(forms batch and per_image, ignored pixels, soft labels), the empty-channel rule, Tversky's reduction to Dice,
and smp's DiceLoss and TverskyLoss where their definitions agree with seg's."""

import math

import pytest
import segmentation_models_pytorch as smp
import torch

from seg.losses.region import soft_counts, soft_dice_loss, tversky_loss

LN3 = math.log(3.0)


def naive_sums(x, y, valid, form):
    """{(image or None, channel): (sum p*y, sum p, sum y)} over valid pixels, by plain Python loops in float64."""
    x, y = x.double().tolist(), y.double().tolist()
    valid = [[[[True] * len(row) for row in x[b][0]]] for b in range(len(x))] if valid is None else valid.tolist()
    sums = {}
    for b, image in enumerate(x):
        for c, channel in enumerate(image):
            key = (None if form == "batch" else b, c)
            py, sp, sy = sums.get(key, (0.0, 0.0, 0.0))
            for i, row in enumerate(channel):
                for j, logit in enumerate(row):
                    if valid[b][0][i][j]:
                        p, t = 1.0 / (1.0 + math.exp(-logit)), y[b][c][i][j]
                        py, sp, sy = py + p * t, sp + p, sy + t
            sums[key] = (py, sp, sy)
    return sums


def naive_dice(x, y, valid=None, form="batch", smooth=1.0):
    """Mean of 1 - (2 sum(p*y) + s) / (sum(p) + sum(y) + s): the classic formula."""
    losses = [1.0 - (2 * py + smooth) / (sp + sy + smooth) for py, sp, sy in naive_sums(x, y, valid, form).values()]
    return sum(losses) / len(losses)


def naive_tversky(x, y, valid=None, alpha=0.3, beta=0.7, gamma=1.0, form="batch", smooth=1.0):
    """Mean of (1 - (TP + s) / (TP + alpha FP + beta FN + s))^gamma with FP = sum p(1-y), FN = sum (1-p)y."""
    losses = []
    for tp, sp, sy in naive_sums(x, y, valid, form).values():
        fp, fn = sp - tp, sy - tp
        losses.append((1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)) ** gamma)
    return sum(losses) / len(losses)


@pytest.fixture
def batch(covered_batch):
    return covered_batch


def hand_tensors():
    """1x1x2x2: p = [0.5, 0.75; 0.25, 0.5], y = [1, 1; 0, 0]: TP = 1.25, FP = 0.75, FN = 0.75, sum p = sum y = 2."""
    x = torch.tensor([[0.0, LN3], [-LN3, 0.0]]).view(1, 1, 2, 2)
    y = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    return x, y


# ------------------------------------------------------------------------------ hand numbers


def test_hand_numbers():
    x, y = hand_tensors()
    tp, fp, fn = soft_counts(x, y, None, "batch")
    torch.testing.assert_close(torch.stack([tp, fp, fn]).view(-1), torch.tensor([1.25, 0.75, 0.75]))
    assert soft_counts(x, y, None, "per_image")[0].shape == (1, 1)
    # Dice: (2.5 + 1) / (4 + 1) = 0.7; smooth 0: 2.5 / 4
    assert soft_dice_loss(x, y).item() == pytest.approx(0.3, rel=1e-6)
    assert soft_dice_loss(x, y, smooth=0.0).item() == pytest.approx(0.375, rel=1e-6)
    # Tversky 0.3/0.7: (1.25 + 1) / (1.25 + 0.225 + 0.525 + 1) = 0.75; focal: 0.25^0.75 = 2^-1.5
    assert tversky_loss(x, y).item() == pytest.approx(0.25, rel=1e-6)
    assert tversky_loss(x, y, gamma=0.75).item() == pytest.approx(2**-1.5, rel=1e-6)
    # beta > alpha: a false negative costs more than a false positive
    y_fn = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)  # TP 1.5, FP 0.5, FN 1.5
    assert tversky_loss(x, y_fn, smooth=0.0).item() == pytest.approx(1 - 1.5 / (1.5 + 0.15 + 1.05), rel=1e-6)


def test_hand_gradient_of_dice():
    """d/dx_i of 1 - (2 TP + s)/(P + Y + s) = -p_i(1-p_i) [2 y_i (P + Y + s) - (2 TP + s)] / (P + Y + s)^2."""
    x, y = hand_tensors()
    x.requires_grad_()
    soft_dice_loss(x, y, smooth=1.0).backward()
    p = torch.tensor([0.5, 0.75, 0.25, 0.5])
    expected = -p * (1 - p) * (2 * y.view(-1) * 5.0 - 3.5) / 25.0
    torch.testing.assert_close(x.grad.view(-1), expected)


# ------------------------------------------------------------------------------ against plain loops


@pytest.mark.parametrize("smooth", [0.0, 1.0])
@pytest.mark.parametrize("form", ["batch", "per_image"])
def test_dice_matches_loops(batch, form, smooth):
    x, y, valid = batch
    assert soft_dice_loss(x, y, valid, form, smooth).item() == pytest.approx(
        naive_dice(x, y, valid, form, smooth), rel=1e-5
    )
    assert soft_dice_loss(x, y, None, form, smooth).item() == pytest.approx(
        naive_dice(x, y, None, form, smooth), rel=1e-5
    )


@pytest.mark.parametrize("form", ["batch", "per_image"])
@pytest.mark.parametrize(("alpha", "beta", "gamma", "smooth"), [(0.3, 0.7, 1.0, 1.0), (0.7, 0.3, 0.75, 0.0)])
def test_tversky_matches_loops(batch, form, alpha, beta, gamma, smooth):
    x, y, valid = batch
    assert tversky_loss(x, y, valid, alpha, beta, gamma, form, smooth).item() == pytest.approx(
        naive_tversky(x, y, valid, alpha, beta, gamma, form, smooth), rel=1e-5
    )


def test_forms_differ(batch):
    """batch pools the images; per_image averages per-image scores: not the same number."""
    x, y, valid = batch
    assert abs(soft_dice_loss(x, y, valid, "batch").item() - soft_dice_loss(x, y, valid, "per_image").item()) > 1e-3
    with pytest.raises(ValueError, match="form must be one of"):
        soft_dice_loss(x, y, valid, "image")


@pytest.mark.parametrize("form", ["batch", "per_image"])
def test_soft_labels_use_the_classic_formula(batch, form):
    x, _, valid = batch
    g = torch.Generator().manual_seed(5)
    y = torch.tensor([0.0, 0.3, 0.7, 1.0])[torch.randint(0, 4, x.shape, generator=g)]
    assert soft_dice_loss(x, y, valid, form).item() == pytest.approx(naive_dice(x, y, valid, form), rel=1e-5)
    assert tversky_loss(x, y, valid, form=form, gamma=0.75).item() == pytest.approx(
        naive_tversky(x, y, valid, gamma=0.75, form=form), rel=1e-5
    )
    # by hand: p = 0.5 everywhere on 1x1x1x2, y = (0.3, 0.7): (2 * 0.5 + 1) / (1 + 1 + 1) = 2/3
    assert soft_dice_loss(torch.zeros(1, 1, 1, 2), torch.tensor([0.3, 0.7]).view(1, 1, 1, 2)).item() == pytest.approx(
        1 / 3, rel=1e-6
    )


@pytest.mark.parametrize("form", ["batch", "per_image"])
@pytest.mark.parametrize("loss_fn", [soft_dice_loss, tversky_loss])
def test_ignored_pixels_change_neither_loss_nor_gradient(batch, form, loss_fn):
    x, y, valid = batch
    x2 = torch.where(valid, x, torch.full_like(x, 1e3)).requires_grad_()  # wild logits and flipped targets there
    y2 = torch.where(valid, y, 1 - y)
    x = x.clone().requires_grad_()
    a = loss_fn(x, y, valid, form=form)
    b = loss_fn(x2, y2, valid, form=form)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    a.backward()
    b.backward()
    ignored = ~valid.expand_as(x)
    assert ignored.any() and torch.equal(x.grad[ignored], torch.zeros(int(ignored.sum())))
    assert torch.equal(x2.grad[ignored], torch.zeros(int(ignored.sum())))
    torch.testing.assert_close(x.grad, x2.grad)
    assert x.grad[~ignored].abs().min() > 0
    # and the ignored pixels do matter when not masked
    assert abs(loss_fn(x2, y2, None, form=form).item() - a.item()) > 1e-3


# ------------------------------------------------------------------------------ empty channels


def test_empty_channel_hand_numbers():
    """No positive pixel: loss sum(p) / (sum(p) + s), gradient s / (sum(p) + s)^2 * p(1-p), kept in the mean."""
    x, _ = hand_tensors()
    x.requires_grad_()
    loss = soft_dice_loss(x, torch.zeros_like(x), smooth=1.0)
    assert loss.item() == pytest.approx(2 / 3, rel=1e-6)  # sum p = 2
    loss.backward()
    p = torch.tensor([0.5, 0.75, 0.25, 0.5])
    torch.testing.assert_close(x.grad.view(-1), p * (1 - p) / 9)
    # two channels, one empty: the mean of 0.3 (hand_tensors) and 2/3, not 0.3 alone (smp) nor 0.3 / 2
    x2 = torch.cat([x.detach(), x.detach()], dim=1)
    y2 = torch.cat([hand_tensors()[1], torch.zeros(1, 1, 2, 2)], dim=1)
    assert soft_dice_loss(x2, y2).item() == pytest.approx((0.3 + 2 / 3) / 2, rel=1e-6)
    # Tversky the same way: (TP + s) / (TP + alpha FP + s) = 1 / (1 + 0.3 * 2)
    assert tversky_loss(x.detach(), torch.zeros_like(x)).item() == pytest.approx(1 - 1 / 1.6, rel=1e-6)


def test_empty_channel_without_smoothing_scores_one():
    """smooth 0: an empty channel scores 0 / sum(p) = 0 (loss 1) whatever is predicted, so it has no gradient;
    with nothing predicted the clamped denominator gives the same."""
    x, _ = hand_tensors()
    x.requires_grad_()
    loss = soft_dice_loss(x, torch.zeros_like(x), smooth=0.0)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert x.grad.abs().max() < 1e-6
    nothing = torch.full((1, 1, 2, 2), -200.0)  # sigmoid(-200) == 0 in float32
    assert soft_dice_loss(nothing, torch.zeros_like(nothing), smooth=0.0).item() == 1.0


def test_channel_empty_in_one_image_only():
    """batch form: a channel with positives in some image of the batch is not empty; per_image: the image without
    positives scores by the empty-channel rule."""
    x0, y0 = hand_tensors()
    x = torch.cat([x0, x0])  # two identical images of predictions
    y = torch.cat([y0, torch.zeros_like(y0)])  # positives in image 0 only
    # batch: TP 1.25, sum p 4, sum y 2: 1 - (2.5 + 1) / (6 + 1)
    assert soft_dice_loss(x, y, form="batch").item() == pytest.approx(0.5, rel=1e-6)
    # per_image: image 0 scores 0.3, image 1 is empty: 2 / 3
    assert soft_dice_loss(x, y, form="per_image").item() == pytest.approx((0.3 + 2 / 3) / 2, rel=1e-6)
    # the empty image pushes its probabilities down in both forms (nonzero gradient on every pixel)
    for form in ("batch", "per_image"):
        xg = x.clone().requires_grad_()
        soft_dice_loss(xg, y, form=form).backward()
        assert (xg.grad[1] > 0).all()


# ------------------------------------------------------------------------------ Tversky vs Dice


@pytest.mark.parametrize("form", ["batch", "per_image"])
def test_tversky_half_half_is_dice(batch, form):
    """alpha = beta = 0.5, smooth 0, gamma 1: TP / (TP + (FP + FN)/2) = 2 TP / (2 TP + FP + FN)."""
    x, y, valid = batch
    dice = soft_dice_loss(x, y, valid, form, smooth=0.0)
    tversky = tversky_loss(x, y, valid, 0.5, 0.5, 1.0, form, smooth=0.0)
    assert tversky.item() == pytest.approx(dice.item(), rel=1e-6)
    # with smoothing they differ: Tversky's s is Dice's 2s
    assert tversky_loss(x, y, valid, 0.5, 0.5, 1.0, form, smooth=1.0).item() == pytest.approx(
        soft_dice_loss(x, y, valid, form, smooth=2.0).item(), rel=1e-6
    )


def test_focal_tversky_exponent(batch):
    """gamma applies per channel, before the mean: mean((1 - TI_c)^0.75)."""
    x, y, valid = batch
    tp, fp, fn = (t.double() for t in soft_counts(x, y, valid, "batch"))
    index = (tp + 1.0) / (tp + 0.3 * fp + 0.7 * fn + 1.0)
    expected = ((1 - index) ** 0.75).mean()
    assert tversky_loss(x, y, valid, gamma=0.75).item() == pytest.approx(expected.item(), rel=1e-6)
    assert tversky_loss(x, y, valid, gamma=0.75).item() != pytest.approx(((1 - index).mean() ** 0.75).item(), rel=1e-4)


# ------------------------------------------------------------------------------ smp


def test_dice_matches_smp_where_defined(batch):
    """smp's multilabel DiceLoss pools the batch per channel (dims (0, 2)): seg's form batch. Same number on hard
    labels, nothing ignored, every channel non-empty in the batch, smooth 0."""
    x, y, _ = batch
    ours = soft_dice_loss(x, y, None, "batch", smooth=0.0)
    theirs = smp.losses.DiceLoss("multilabel", from_logits=True, smooth=0.0)(x, y)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    # smp's smooth s sits at (TP + s) / (TP + (FP + FN)/2 + s): seg's smooth 2s
    theirs = smp.losses.DiceLoss("multilabel", from_logits=True, smooth=1.0)(x, y)
    assert soft_dice_loss(x, y, None, "batch", smooth=2.0).item() == pytest.approx(theirs.item(), rel=1e-5)


def test_smp_dice_drops_empty_channels(batch):
    """Where they disagree: smp zeroes the loss of a channel empty in the batch (and still divides by C)."""
    x, y, _ = batch
    y = y.clone()
    y[:, 2] = 0
    theirs = smp.losses.DiceLoss("multilabel", from_logits=True, smooth=1.0)(x, y)
    per_channel = [soft_dice_loss(x[:, c : c + 1], y[:, c : c + 1], smooth=2.0).item() for c in range(3)]
    assert theirs.item() == pytest.approx((per_channel[0] + per_channel[1]) / 3, rel=1e-5)
    assert soft_dice_loss(x, y, smooth=2.0).item() == pytest.approx(sum(per_channel) / 3, rel=1e-5)
    assert per_channel[2] > 0.5


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.7, 0.3)])
def test_tversky_matches_smp_where_defined(batch, alpha, beta):
    """smp's TverskyLoss has the same index and smoothing; it agrees for gamma 1 (and for gamma != 1 with one
    channel only: smp raises the channel mean to gamma, seg averages the per-channel powers)."""
    x, y, _ = batch
    for smooth in (0.0, 1.0):
        theirs = smp.losses.TverskyLoss("multilabel", from_logits=True, smooth=smooth, alpha=alpha, beta=beta)(x, y)
        ours = tversky_loss(x, y, None, alpha, beta, 1.0, "batch", smooth)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    one = smp.losses.TverskyLoss("multilabel", from_logits=True, smooth=1.0, alpha=alpha, beta=beta, gamma=0.75)
    assert tversky_loss(x[:, :1], y[:, :1], None, alpha, beta, 0.75).item() == pytest.approx(
        one(x[:, :1], y[:, :1]).item(), rel=1e-5
    )
    # three channels: smp = (mean_c l_c)^0.75, seg = mean_c l_c^0.75 (l_c: each channel's gamma-1 loss)
    losses = torch.stack([tversky_loss(x[:, c : c + 1], y[:, c : c + 1], None, alpha, beta) for c in range(3)]).double()
    three = smp.losses.TverskyLoss("multilabel", from_logits=True, smooth=1.0, alpha=alpha, beta=beta, gamma=0.75)
    assert three(x, y).item() == pytest.approx((losses.mean() ** 0.75).item(), rel=1e-5)
    assert tversky_loss(x, y, None, alpha, beta, 0.75).item() == pytest.approx((losses**0.75).mean().item(), rel=1e-5)
    # channels far apart (one nearly perfect): the two reductions differ
    x2 = x.clone()
    x2[:, 0] = torch.where(y[:, 0] > 0, 20.0, -20.0)
    ours, theirs = tversky_loss(x2, y, None, alpha, beta, 0.75).item(), three(x2, y).item()
    assert theirs - ours > 0.02


@pytest.mark.parametrize("loss", [soft_dice_loss, tversky_loss])
def test_per_image_leaves_out_an_image_with_no_valid_pixel(loss):
    """An image all ignored (e.g. padding only) is not a perfect score averaged in: it is left out."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 2, 4, 4, generator=g), (torch.rand(2, 2, 4, 4, generator=g) > 0.5).float()
    valid = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    valid[1] = False
    alone = loss(x[:1], y[:1], form="per_image")
    assert float(loss(x, y, valid, form="per_image")) == pytest.approx(float(alone), rel=1e-6)
    assert float(loss(x, y, torch.zeros_like(valid), form="per_image")) == 0.0  # nothing to score
