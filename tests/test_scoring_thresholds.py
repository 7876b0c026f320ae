"""Tests for seg/scoring/thresholds.py: the probability grid, the histograms' counts at every grid
threshold, grid intervals without a search (as torch.bucketize, at and beside every boundary), the joint
histogram's counts at other thresholds, the best threshold by hand, and log_q."""

import math

import pytest
import torch
from conftest import random_case

from seg.scoring.metrics import confusion_counts
from seg.scoring.thresholds import (
    best_threshold_indices,
    counts_at,
    counts_at_every_threshold,
    grid_intervals,
    interval_histograms,
    log_q,
    logit_boundaries,
    prediction_counts,
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


def edge_logits(boundaries: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Every boundary, its float32 neighbours (two above, one below), infinities, NaN of both signs, zeros of
    both signs, huge and tiny values, then random logits of a wide range: float32, 1-D."""
    up, down = torch.tensor(math.inf), torch.tensor(-math.inf)
    special = [math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, -1e-40, 88.0, -104.0]
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            boundaries,
            torch.nextafter(boundaries, up),
            torch.nextafter(torch.nextafter(boundaries, up), up),
            torch.nextafter(boundaries, down),
            torch.tensor(special),
            torch.randn(30_000, generator=g) * 5,
        ]
    )


@pytest.mark.parametrize("step", [0.5, 0.1, 0.01, 0.001, 0.0001])
def test_grid_intervals_are_bucketize_at_and_beside_every_boundary(step):
    # Independent check: torch.bucketize's binary search (NaN above every boundary).
    boundaries = logit_boundaries(probability_grid(step))
    x = edge_logits(boundaries)
    x = x[: x.numel() - x.numel() % 3].view(1, 3, -1, 1).contiguous(memory_format=torch.channels_last)
    got = grid_intervals(x, torch.sigmoid(x), boundaries)
    assert got.shape == x.shape and got.dtype == torch.int32
    assert torch.equal(got.long(), torch.bucketize(x.contiguous(), boundaries))


def test_interval_histograms_count_other_thresholds_as_confusion_counts():
    logits, target, valid = random_case(5, n=3, c=2)
    boundaries = logit_boundaries(probability_grid(0.1))
    thresholds = [0.0, torch.tensor([0.7, -1.2]).view(2, 1, 1), torch.tensor([2.0, 0.1]).view(2, 1, 1)]
    intervals = torch.bucketize(logits, boundaries)
    joint = interval_histograms(intervals, target >= 0.5, valid, 10, [logits > t for t in thresholds])
    assert joint.shape == (3, 2, 2, 10, 8) and joint.dtype == torch.long
    assert torch.equal(joint.sum(-1).int(), threshold_histograms(logits, target, valid, boundaries))
    for bit, threshold in enumerate(thresholds):
        assert torch.equal(prediction_counts(joint, bit), confusion_counts(logits, target, valid, threshold))


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
