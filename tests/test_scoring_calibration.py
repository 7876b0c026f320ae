"""Tests for seg/scoring/calibration.py: ECE against a plain NumPy computation, a hand-worked example,
the sums adding up over batches (the reliability diagram: tests/test_outputs_reliability.py)."""

import numpy as np
import pytest
import torch

from seg.scoring.calibration import calibration_sums, expected_calibration_error, reliability_table


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
