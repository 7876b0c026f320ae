"""Tests for seg/scoring/calibration.py: ECE against a plain NumPy computation, a hand-worked example,
the sums adding up over batches, the float64 sums bit for bit those of one plain scatter in (image, channel,
row, column) order (whatever the layout and however a batch is cut into parts), the Brier score by hand, Platt
scaling against known parameters and an independent Newton fit, pixel sampling (the reliability diagram:
tests/test_outputs_reliability.py)."""

import numpy as np
import pytest
import torch

from seg.scoring.calibration import (
    PIXELS,
    POSITIVES,
    PROB_SUM,
    SQUARED_ERROR,
    SUMS_COLUMNS,
    CalibrationBins,
    brier_score,
    calibration_probability,
    calibration_sums,
    expected_calibration_error,
    fit_platt,
    reliability_table,
    sample_pixels,
)


def numpy_ece(prob, target, valid, bins=15):
    """Per channel: sum over equal-width bins of (n_b / n) * |fraction positive - mean probability|."""
    prob = prob.numpy().astype(np.float32)
    out = []
    for c in range(prob.shape[1]):
        p = prob[:, c][valid[:, 0]].astype(np.float64)
        y = target[:, c][valid[:, 0]] >= 0.5
        which = np.minimum(np.floor(prob[:, c][valid[:, 0]] * np.float32(bins)).astype(int), bins - 1)
        ece = 0.0
        for b in range(bins):
            in_bin = which == b
            if in_bin.any():
                ece += in_bin.sum() / p.size * abs(y[in_bin].mean() - p[in_bin].mean())
        out.append(ece)
    return np.array(out)


def newton_platt(x, y, iterations=30):
    """Independent Platt fit: Newton's method on the mean logistic NLL of sigmoid(a * x + b), from (0, 0)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (p - y) / y.size
        hessian = (design * (p * (1 - p))[:, None]).T @ design / y.size
        w -= np.linalg.solve(hessian, gradient)
    return w


@pytest.mark.parametrize("seed", [0, 1])
def test_ece_matches_numpy(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 3, 20, 20, generator=g) * 3
    target = (torch.rand(6, 3, 20, 20, generator=g) < torch.sigmoid(logits * 0.6 - 0.5)).float()
    valid = torch.rand(6, 1, 20, 20, generator=g) > 0.25
    log_q = torch.tensor([0.0, 1.0, -0.5]).view(3, 1, 1)
    for shift in (0.0, log_q):
        sums = calibration_sums(logits, target, valid, shift)
        expected = numpy_ece(torch.sigmoid(logits - shift), target.numpy(), valid.numpy())
        np.testing.assert_allclose(expected_calibration_error(sums).numpy(), expected, atol=1e-6)
        assert sums[..., 0].sum().item() == 3 * valid.sum().item()


def test_ece_by_hand():
    # One channel, 4 pixels, 2 bins: p = 0.1, 0.2 (bin 0), 0.7, 0.9 (bin 1); labels 0, 1, 1, 1.
    # bin 0: mean p 0.15, frequency 1/2 -> |0.5 - 0.15| = 0.35, weight 2/4
    # bin 1: mean p 0.8,  frequency 1   -> |1 - 0.8| = 0.2,    weight 2/4   -> ECE 0.175 + 0.1 = 0.275
    prob = torch.tensor([0.1, 0.2, 0.7, 0.9], dtype=torch.float64)
    logits = torch.logit(prob).float().view(1, 1, 1, 4)
    target = torch.tensor([0.0, 1.0, 1.0, 1.0]).view(1, 1, 1, 4)
    sums = calibration_sums(logits, target, None, bins=2)
    assert float(expected_calibration_error(sums)[0]) == pytest.approx(0.275, abs=1e-6)
    table = reliability_table(sums)
    assert table["frequency"][0].tolist() == [0.5, 1.0] and table["pixels"][0].tolist() == [2, 2]
    assert table["confidence"][0] == pytest.approx([0.15, 0.8], abs=1e-6)
    assert table["edges"].tolist() == [0.0, 0.5, 1.0]


def test_sums_add_up_over_batches_and_empty_channels_are_nan():
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(4, 2, 8, 8, generator=g), (torch.rand(4, 2, 8, 8, generator=g) < 0.3).float()
    whole = calibration_sums(logits, target, None)
    parts = calibration_sums(logits[:1], target[:1], None) + calibration_sums(logits[1:], target[1:], None)
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-9)
    nothing = calibration_sums(logits, target, torch.zeros(4, 1, 8, 8, dtype=torch.bool))
    assert torch.isnan(expected_calibration_error(nothing)).all()
    assert torch.isnan(brier_score(nothing)).all()


def plain_calibration_sums(logits, target, valid, log_q=0.0, bins=15, scale=1.0):
    """The sums as one scatter over the pixels in (image, channel, row, column) order (seg's first version)."""
    c = logits.shape[1]
    prob = torch.sigmoid(logits.float() * scale - log_q)
    which = (prob * bins).long().clamp_(max=bins - 1)
    truth = (target >= 0.5).long()
    index = (torch.arange(c).view(1, c, 1, 1) * bins + which) * 2 + truth
    index = torch.where(valid, index, c * bins * 2).flatten()
    sums = torch.zeros(3, c * bins * 2 + 1, dtype=torch.float64)
    sums[0].scatter_add_(0, index, torch.ones(index.numel(), dtype=torch.float64))
    sums[1].scatter_add_(0, index, prob.double().flatten())
    sums[2].scatter_add_(0, index, (prob.double() - truth.double()).square().flatten())
    pixels, prob_sum, squared = (s[:-1].view(c, bins, 2) for s in sums)
    return torch.stack([pixels.sum(-1), prob_sum.sum(-1), pixels[..., 1], squared.sum(-1)], dim=-1)


def test_sums_are_bit_for_bit_one_plain_scatter_in_any_layout_and_in_parts():
    # Invariance: float64 sums depend on the order of their adds; each bin must get its pixels in the plain
    # (image, row, column) order, whether the logits are channels_last and however the batch is cut into rows.
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 37, 29, generator=g) * 3
    logits[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])
    target = torch.rand(2, 3, 37, 29, generator=g)  # soft labels
    valid = torch.rand(2, 1, 37, 29, generator=g) > 0.2
    log_q, a = torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1), torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64)
    for shift, scale in ((0.0, 1.0), (log_q, 1.0), (-log_q.double(), a.view(3, 1, 1))):
        expected = plain_calibration_sums(logits, target, valid, shift, 15, scale)
        for x in (logits, logits.contiguous(memory_format=torch.channels_last)):
            assert torch.equal(
                calibration_sums(x, target, valid, shift, 15, scale).nan_to_num(-1), expected.nan_to_num(-1)
            )
        prob = calibration_probability(logits, shift, scale)
        parts = CalibrationBins(["p"], 3, 15, 3 * 10 * 29, torch.device("cpu"))
        for image in range(2):
            for top in range(0, 37, 10):
                rows = (slice(image, image + 1), slice(None), slice(top, top + 10))
                parts.add({"p": prob[rows]}, target[rows] >= 0.5, valid[rows])
        assert torch.equal(parts.sums("p").nan_to_num(-1), expected.nan_to_num(-1))


def test_brier_by_hand_with_ignored_pixels_and_a_soft_label():
    # One channel, 5 pixels, p = 0.1, 0.2, 0.7, 0.9, 0.6; targets 0, 0.7 (soft: counts as 1), 1, 1, 0;
    # the last pixel is ignored. (p - y)^2 = 0.01, 0.64, 0.09, 0.01 -> Brier 0.75 / 4 = 0.1875.
    prob = torch.tensor([0.1, 0.2, 0.7, 0.9, 0.6], dtype=torch.float64)
    logits = torch.logit(prob).float().view(1, 1, 1, 5)
    target = torch.tensor([0.0, 0.7, 1.0, 1.0, 0.0]).view(1, 1, 1, 5)
    valid = torch.tensor([True, True, True, True, False]).view(1, 1, 1, 5)
    sums = calibration_sums(logits, target, valid, bins=2)
    assert sums.shape == (1, 2, SUMS_COLUMNS) and sums.dtype == torch.float64
    assert sums[0, :, SQUARED_ERROR].tolist() == pytest.approx([0.01 + 0.64, 0.09 + 0.01], abs=1e-6)
    assert sums[0, :, PIXELS].tolist() == [2, 2] and sums[0, :, POSITIVES].tolist() == [1, 2]
    assert sums[0, :, PROB_SUM].tolist() == pytest.approx([0.3, 1.6], abs=1e-6)
    assert float(brier_score(sums)[0]) == pytest.approx(0.1875, abs=1e-6)


def test_brier_matches_the_plain_formula_with_scale_and_shift():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 2, 9, 9, generator=g) * 2
    target = torch.rand(3, 2, 9, 9, generator=g)  # soft labels, y = target >= 0.5
    valid = torch.rand(3, 1, 9, 9, generator=g) > 0.3
    a, b = torch.tensor([0.5, 2.0]).view(2, 1, 1), torch.tensor([-1.0, 0.25]).view(2, 1, 1)
    sums = calibration_sums(logits, target, valid, -b, scale=a)
    p = torch.sigmoid(a * logits.double() + b.double())
    squared = (p - (target >= 0.5).double()) ** 2
    expected = (squared * valid).sum((0, 2, 3)) / valid.sum()
    torch.testing.assert_close(brier_score(sums), expected, rtol=0, atol=1e-6)
    # scale multiplies the logit before the shift
    torch.testing.assert_close(sums, calibration_sums(logits * a, target, valid, -b), rtol=0, atol=1e-9)


def test_calibration_sums_compiles_without_graph_breaks():
    # torch.compile(fullgraph=True) fails on .item(), .cpu(), Python branches over tensor values.
    g = torch.Generator().manual_seed(5)
    logits, target = torch.randn(2, 3, 8, 8, generator=g), (torch.rand(2, 3, 8, 8, generator=g) < 0.4).float()
    valid = torch.rand(2, 1, 8, 8, generator=g) > 0.2
    log_q, scale = torch.tensor([0.0, 1.0, -0.5]).view(3, 1, 1), torch.tensor([1.0, 0.5, 2.0]).view(3, 1, 1)
    compiled = torch.compile(calibration_sums, fullgraph=True, backend="eager")
    got = compiled(logits, target, valid, log_q, 15, scale)
    torch.testing.assert_close(got, calibration_sums(logits, target, valid, log_q, 15, scale))


def synthetic_pixels(a0, b0, channels=2, pixels=40_000, seed=0):
    """logits x ~ 3 * N(0, 1) and labels y ~ Bernoulli(sigmoid(a0 * x + b0)), [C, K]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(channels, pixels, generator=g) * 3
    y = (torch.rand(channels, pixels, generator=g) < torch.sigmoid(a0 * x + b0)).float()
    return x, y, torch.ones(channels, pixels, dtype=torch.bool)


def test_fit_platt_recovers_known_parameters_and_matches_newton():
    x, y, mask = synthetic_pixels(0.5, -1.2)
    mask[1, ::3] = False  # masked pixels take no part
    a, b = fit_platt(x, y, mask)
    assert a.dtype == b.dtype == torch.float64 and a.shape == b.shape == (2,) and a.device.type == "cpu"
    np.testing.assert_allclose(a.numpy(), 0.5, atol=0.05)
    np.testing.assert_allclose(b.numpy(), -1.2, atol=0.05)
    for c in range(2):
        keep = mask[c].numpy()
        expected = newton_platt(x[c].double().numpy()[keep], y[c].double().numpy()[keep])
        np.testing.assert_allclose([a[c].item(), b[c].item()], expected, atol=1e-4)


def test_fit_platt_undoes_a_pos_weight_shift():
    # A model trained with pos_weight q outputs logit = true logit + log q: Platt finds a = 1, b = -log q.
    log_q = torch.tensor([np.log(20.0), np.log(3.0)])
    x, y, mask = synthetic_pixels(1.0, 0.0, seed=1)
    a, b = fit_platt(x + log_q.float().view(2, 1), y, mask)
    np.testing.assert_allclose(a.numpy(), 1.0, atol=0.05)
    np.testing.assert_allclose(b.numpy(), -log_q.numpy(), atol=0.05)


def test_fit_platt_keeps_the_start_for_degenerate_channels():
    x, y, mask = synthetic_pixels(0.5, -1.2, channels=4, pixels=2_000, seed=2)
    y[1] = 1.0  # only positives
    mask[2] = False  # no pixels
    y[3, mask[3]] = 0.0  # only negatives among the masked pixels...
    y[3, :5], mask[3, :5] = 1.0, False  # ...positives only where masked out
    a, b = fit_platt(x, y, mask)
    assert a[1:].tolist() == [1.0, 1.0, 1.0] and b[1:].tolist() == [0.0, 0.0, 0.0]
    assert abs(a[0].item() - 1.0) > 0.1  # the ordinary channel is fitted
    init_b = torch.tensor([0.0, -3.0, -2.0, -1.0])
    a, b = fit_platt(x, y, mask, init_b=init_b)
    assert a[1:].tolist() == [1.0, 1.0, 1.0] and b[1:].tolist() == [-3.0, -2.0, -1.0]
    a, b = fit_platt(x[1:], y[1:], mask[1:])  # nothing to fit at all
    assert a.tolist() == [1.0, 1.0, 1.0] and b.tolist() == [0.0, 0.0, 0.0]


def test_sample_pixels_shapes_determinism_and_mask():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 2, 5, 7, generator=g)
    target = torch.rand(3, 2, 5, 7, generator=g)
    valid = torch.rand(3, 1, 5, 7, generator=g) > 0.5
    first = sample_pixels(logits, target, valid, 50, torch.Generator().manual_seed(7))
    again = sample_pixels(logits, target, valid, 50, torch.Generator().manual_seed(7))
    other = sample_pixels(logits, target, valid, 50, torch.Generator().manual_seed(8))
    x, y, mask = first
    assert x.shape == y.shape == mask.shape == (2, 150)
    assert (x.dtype, y.dtype, mask.dtype) == (torch.float32, torch.float32, torch.bool)
    for got, expected in zip(again, first, strict=True):
        assert torch.equal(got, expected)
    assert not torch.equal(other[0], x)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    # every drawn pixel is a real pixel of its image, with its own target and validity, at the same place
    # in both channels; pixels k in [50 i, 50 (i + 1)) come from image i
    for k in range(150):
        image = k // 50
        where = (logits[image, 0] == x[0, k]).nonzero()
        assert len(where) == 1
        row, col = where[0].tolist()
        assert x[1, k] == logits[image, 1, row, col]
        assert y[:, k].tolist() == (target[image, :, row, col] >= 0.5).float().tolist()
        assert mask[:, k].tolist() == [bool(valid[image, 0, row, col])] * 2
    assert 0 < mask[0].sum() < 150
    x, y, mask = sample_pixels(logits, target, None, 4, None)
    assert mask.shape == (2, 12) and bool(mask.all())


def test_sampled_platt_fit_feeds_calibration_sums():
    # The workflow: sample held-out pixels, fit a and b, score with scale=a, log_q=-b.
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 2, 32, 32, generator=g) * 3
    target = (torch.rand(4, 2, 32, 32, generator=g) < torch.sigmoid(0.5 * logits - 1.2)).float()
    a, b = fit_platt(*sample_pixels(logits, target, None, 1024, torch.Generator().manual_seed(0)))
    raw = calibration_sums(logits, target, None)
    platt = calibration_sums(logits, target, None, -b.float().view(2, 1, 1), scale=a.float().view(2, 1, 1))
    assert (brier_score(platt) < brier_score(raw)).all()
    assert (expected_calibration_error(platt) < 0.5 * expected_calibration_error(raw)).all()
