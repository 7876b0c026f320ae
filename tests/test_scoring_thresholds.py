"""Tests for seg/scoring/thresholds.py: the probability grid, the histograms' counts at every grid
threshold, the best threshold by hand, and log_q."""

import math

import pytest
import torch
from conftest import random_case

from seg.scoring.metrics import confusion_counts
from seg.scoring.thresholds import (
    best_threshold_indices,
    counts_at,
    counts_at_every_threshold,
    log_q,
    logit_boundaries,
    probability_grid,
    threshold_histograms,
)

# ------------------------------------------------------------------ threshold histograms


def test_probability_grid():
    grid = probability_grid(0.01)
    assert grid.numel() == 99 and grid[0] == 0.01 and grid[49] == 0.5 and grid[-1] == 0.99
    assert logit_boundaries(grid)[49] == 0.0
    with pytest.raises(ValueError):
        probability_grid(0.3)


def test_histograms_give_the_counts_of_every_grid_threshold():
    # Independent check: direct counting at each grid threshold (logit > logit(t)).
    logits, target, valid = random_case(3, n=3, c=2)
    grid = probability_grid(0.05)
    boundaries = logit_boundaries(grid)
    hist = threshold_histograms(logits, target, valid, boundaries)
    assert hist.shape == (3, 2, 2, grid.numel() + 1) and hist.dtype == torch.int32
    assert int(hist.sum()) == 2 * int(valid.sum())
    every = counts_at_every_threshold(hist)  # [N, C, G, 4]
    for k in range(grid.numel()):
        direct = confusion_counts(logits, target, valid, float(boundaries[k]))
        assert torch.equal(every[:, :, k], direct), k
        assert torch.equal(counts_at(hist, torch.tensor([k, k])), direct)
    mixed = counts_at(hist, torch.tensor([2, 15]))
    assert torch.equal(mixed[:, 0], every[:, 0, 2]) and torch.equal(mixed[:, 1], every[:, 1, 15])


def test_best_threshold_indices_by_hand():
    # One channel, grid 0.25 / 0.5 / 0.75 (intervals 0..3). Positives: 4 px in interval 3 (p > 0.75),
    # 1 px in interval 1. Negatives: 2 px in interval 2, 10 px in interval 0.
    # t=0.25: tp 5 fp 2 fn 0 -> 10/12; t=0.5: tp 4 fp 2 fn 1 -> 8/11; t=0.75: tp 4 fp 0 fn 1 -> 8/9 (best)
    # Second channel: nothing positive and nothing above 0.25 -> empty everywhere -> the first threshold.
    hist = torch.tensor([[[10, 0, 2, 0], [0, 1, 0, 4]], [[17, 0, 0, 0], [0, 0, 0, 0]]])
    assert best_threshold_indices(hist).tolist() == [2, 0]


def test_log_q_shapes():
    assert log_q([1.0, math.e]).flatten().tolist() == pytest.approx([0.0, 1.0])
    assert log_q([2.0]).shape == (1, 1, 1)
