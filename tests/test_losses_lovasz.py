"""Tests for seg/losses/lovasz.py: the Lovász hinge against Berman et al.'s algorithm written in plain Python and
against the Lovász extension as an integral of the Jaccard set function (forms batch and per_image), ignored pixels,
the refusal of soft labels, the empty channel, and smp's binary LovaszLoss."""

import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from seg.losses.lovasz import lovasz_grad, lovasz_hinge


def berman_flat(logits, labels):
    """Berman et al. 2018, Alg. 1, by loops: hinge errors sorted descending, the Jaccard-loss gradient at the sorted
    labels."""
    errors = [1.0 - x * (2.0 * y - 1.0) for x, y in zip(logits, labels, strict=True)]
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    positives = sum(labels)
    loss, previous, fn, fp = 0.0, 0.0, 0.0, 0.0
    for i in order:
        fn, fp = fn + labels[i], fp + (1.0 - labels[i])
        jaccard = 1.0 - (positives - fn) / (positives + fp)
        loss += max(errors[i], 0.0) * (jaccard - previous)
        previous = jaccard
    return loss


def layer_cake_flat(logits, labels):
    """The Lovász extension of the Jaccard loss Delta(M) = |M| / |positives U M| at m = relu(errors), as the integral
    of Delta({i: m_i >= t}) over t > 0 (exact: Delta is constant between consecutive values of m)."""
    m = [max(1.0 - x * (2.0 * y - 1.0), 0.0) for x, y in zip(logits, labels, strict=True)]
    positives = {i for i, y in enumerate(labels) if y == 1}
    levels = sorted({v for v in m if v > 0}, reverse=True) + [0.0]
    total = 0.0
    for t, below in zip(levels, levels[1:], strict=False):
        mispredicted = {i for i, v in enumerate(m) if v >= t}
        total += (t - below) * len(mispredicted) / len(positives | mispredicted)
    return total


def reference(x, y, valid=None, form="batch", flat=berman_flat):
    """Mean over channels (and images for per_image) of the flat hinge over the valid pixels (boolean indexing)."""
    x, y = x.double().numpy(), y.double().numpy()
    valid = np.ones_like(x[:, :1], dtype=bool) if valid is None else valid.numpy()
    valid = np.broadcast_to(valid, x.shape)
    losses = []
    for c in range(x.shape[1]):
        if form == "batch":
            losses.append(flat(x[:, c][valid[:, c]].tolist(), y[:, c][valid[:, c]].tolist()))
        else:
            losses += [flat(x[b, c][valid[b, c]].tolist(), y[b, c][valid[b, c]].tolist()) for b in range(x.shape[0])]
    return sum(losses) / len(losses)


@pytest.fixture
def batch(covered_batch):
    return covered_batch


# ------------------------------------------------------------------------------ the references agree


def test_references_agree_on_hand_numbers():
    """Labels (1, 0, 1), logits (2, 0.5, -1): errors (-1, 1.5, 2) -> sorted: pixel 2 (positive, 2), pixel 1
    (negative, 1.5), pixel 0 (0). Jaccard losses of the prefixes: 1/2, 2/3, 1: loss = 2 * 1/2 + 1.5 * 1/6 = 1.25."""
    logits, labels = [2.0, 0.5, -1.0], [1.0, 0.0, 1.0]
    assert berman_flat(logits, labels) == pytest.approx(1.25)
    assert layer_cake_flat(logits, labels) == pytest.approx(1.25)
    x, y = torch.tensor(logits).view(1, 1, 1, 3), torch.tensor(labels).view(1, 1, 1, 3)
    assert lovasz_hinge(x, y).item() == pytest.approx(1.25, rel=1e-6)
    torch.testing.assert_close(lovasz_grad(torch.tensor([1.0, 0.0, 1.0])), torch.tensor([0.5, 1 / 6, 1 / 3]))


def test_layer_cake_matches_berman_on_random_vectors():
    g = np.random.default_rng(1)
    for _ in range(5):
        logits, labels = (g.normal(size=12) * 2).tolist(), (g.random(12) > 0.6).astype(float).tolist()
        assert layer_cake_flat(logits, labels) == pytest.approx(berman_flat(logits, labels), rel=1e-12)


# ------------------------------------------------------------------------------ against the references


@pytest.mark.parametrize("flat", [berman_flat, layer_cake_flat])
@pytest.mark.parametrize("form", ["batch", "per_image"])
def test_matches_reference(batch, form, flat):
    x, y, valid = batch
    assert lovasz_hinge(x, y, None, form).item() == pytest.approx(reference(x, y, None, form, flat), rel=1e-5)
    assert lovasz_hinge(x, y, valid, form).item() == pytest.approx(reference(x, y, valid, form, flat), rel=1e-5)


def test_forms_differ_and_channels_are_separate(batch):
    x, y, _ = batch
    batch_form, per_image = lovasz_hinge(x, y, form="batch").item(), lovasz_hinge(x, y, form="per_image").item()
    assert abs(batch_form - per_image) > 1e-3
    # one hinge per channel, averaged: not one hinge over all channels pooled (smp's multilabel)
    per_channel = [lovasz_hinge(x[:, c : c + 1], y[:, c : c + 1]).item() for c in range(3)]
    assert batch_form == pytest.approx(sum(per_channel) / 3, rel=1e-6)
    pooled = berman_flat(x.double().flatten().tolist(), y.double().flatten().tolist())
    assert abs(batch_form - pooled) > 1e-3
    with pytest.raises(ValueError, match="form must be one of"):
        lovasz_hinge(x, y, form="image")


def test_gradient_matches_hand_numbers():
    """d loss / d x_i = -sign_i * g at the sorted position of i (where its error is positive)."""
    x = torch.tensor([2.0, 0.5, -1.0]).view(1, 1, 1, 3).requires_grad_()
    y = torch.tensor([1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    lovasz_hinge(x, y).backward()
    # pixel 2 (sorted first, g 1/2, sign +1): -1/2; pixel 1 (second, g 1/6, sign -1): +1/6; pixel 0: error < 0
    torch.testing.assert_close(x.grad.view(-1), torch.tensor([0.0, 1 / 6, -0.5]))


# ------------------------------------------------------------------------------ ignored pixels


@pytest.mark.parametrize("form", ["batch", "per_image"])
def test_ignored_pixels_are_left_out(batch, form):
    """Ignored pixels carrying target 1 and huge logits of either sign: the loss over the valid pixels alone."""
    x, y, valid = batch
    ignored = ~valid.expand_as(x)
    for wild in (1e4, -1e4):
        x2 = torch.where(ignored, torch.full_like(x, wild), x).requires_grad_()
        y2 = torch.where(ignored, torch.ones_like(y), y)
        loss = lovasz_hinge(x2, y2, valid, form)
        assert loss.item() == pytest.approx(reference(x, y, valid, form), rel=1e-5)
        loss.backward()
        assert torch.equal(x2.grad[ignored], torch.zeros(int(ignored.sum())))
        assert x2.grad[~ignored].abs().max() > 0
        assert abs(lovasz_hinge(x2, y2, None, form).item() - loss.item()) > 1e-3  # they matter unmasked
    x1 = x.clone().requires_grad_()
    lovasz_hinge(x1, y, valid, form).backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_all_ignored_channel_scores_zero():
    x = torch.randn(1, 1, 2, 2)
    y = torch.ones_like(x)
    assert lovasz_hinge(x, y, torch.zeros(1, 1, 2, 2, dtype=torch.bool)).item() == 0.0


# ------------------------------------------------------------------------------ labels and empty channels


def test_soft_labels_are_refused(batch):
    x, y, _ = batch
    y_soft = y.clone()
    y_soft[0, 0, 0, 1] = 0.3
    with pytest.raises(ValueError, match="soft labels") as info:
        lovasz_hinge(x, y_soft)
    assert "\n" not in str(info.value)
    lovasz_hinge(x, y_soft, check_labels=False)  # training skips the check
    lovasz_hinge(x, y)  # hard labels pass


@pytest.mark.parametrize("form", ["batch", "per_image"])
def test_empty_channel_is_relu_of_its_largest_error(batch, form):
    """No positive: g = (1, 0, ...), the loss is relu(1 + max logit); the gradient sits on that pixel alone."""
    x, _, valid = batch
    x1 = x[:1, :1].clone().requires_grad_()
    y1 = torch.zeros_like(x1)
    loss = lovasz_hinge(x1, y1, None, form)
    assert loss.item() == pytest.approx(1.0 + x1.max().item(), rel=1e-6)
    loss.backward()
    expected = torch.zeros_like(x1)
    expected.view(-1)[x1.detach().argmax()] = 1.0
    assert torch.equal(x1.grad, expected)
    # all logits below -1: every error negative, no loss
    assert lovasz_hinge(torch.full((1, 1, 2, 2), -1.5), torch.zeros(1, 1, 2, 2)).item() == 0.0
    # over the valid pixels only, when the largest logit is ignored
    xv = x[:1, :1].clone()
    vv = valid[:1].clone()
    vv.view(-1)[0] = False
    xv.view(-1)[0] = 50.0
    assert lovasz_hinge(xv, torch.zeros_like(xv), vv, form).item() == pytest.approx(
        max(0.0, 1.0 + xv[vv].max().item()), rel=1e-6
    )


# ------------------------------------------------------------------------------ smp


@pytest.mark.parametrize(("per_image", "form"), [(False, "batch"), (True, "per_image")])
def test_matches_smp_binary(batch, per_image, form):
    """smp's binary LovaszLoss on [B, 1, H, W]: one hinge over the batch, or the mean of per-image hinges."""
    x, y, valid = batch
    x, y = x[:, :1], y[:, :1]
    theirs = smp.losses.LovaszLoss("binary", per_image=per_image, from_logits=True)(x, y)
    assert lovasz_hinge(x, y, None, form).item() == pytest.approx(theirs.item(), rel=1e-5)
    # smp's ignore_index (a label value) drops those pixels, as seg's valid mask does
    marked = torch.where(valid, y, torch.full_like(y, 255.0))
    theirs = smp.losses.LovaszLoss("binary", per_image=per_image, ignore_index=255)(x, marked)
    assert lovasz_hinge(x, y, valid, form).item() == pytest.approx(theirs.item(), rel=1e-5)
    assert math.isfinite(theirs.item())


def test_per_image_leaves_out_an_image_with_no_valid_pixel():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 2, 4, 4, generator=g), (torch.rand(2, 2, 4, 4, generator=g) > 0.5).float()
    valid = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    valid[1] = False
    alone = lovasz_hinge(x[:1], y[:1], form="per_image")
    assert float(lovasz_hinge(x, y, valid, form="per_image")) == pytest.approx(float(alone), rel=1e-6)


def test_soft_labels_on_ignored_pixels_are_not_refused():
    x, y = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 0.5]]]])
    valid = torch.tensor([[[[True, True], [True, False]]]])
    assert float(lovasz_hinge(x, y, valid)) == pytest.approx(float(lovasz_hinge(x[..., :1, :], y[..., :1, :])))
