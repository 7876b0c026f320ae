"""Thresholds: the grid searched by ``tuned``, logit histograms per grid interval, and log_q.

:func:`threshold_histograms` counts, per image and channel, the valid pixels of each class
(negative, positive) between consecutive thresholds of a grid (validation finds a pixel's interval
with :func:`grid_intervals`, without a search, and counts with :func:`interval_histograms`, which also
gives the counts at other thresholds: :func:`prediction_counts`); :func:`counts_at_every_threshold`
and :func:`counts_at` turn the cumulative sums into tp, fp, fn, tn at any grid threshold, so a
threshold can be tuned after the pass without running the model again. :func:`log_q` is the
logit shift of the ``prior_corrected`` policy. The policy names are in :mod:`seg.scoring.policies`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from seg.scoring.metrics import check_shapes, dice_from_counts, pixel_major, slot_counts


def probability_grid(step: float = 0.01) -> torch.Tensor:
    """Probability thresholds step, 2*step, ..., 1 - step as float64 (G,): 0.01..0.99 by default."""
    steps = round(1.0 / step)
    if steps < 2 or abs(steps * step - 1.0) > 1e-9:
        raise ValueError(f"step must divide 1 into at least 2 parts, got {step}")
    return torch.arange(1, steps, dtype=torch.float64) / steps


def logit_boundaries(probabilities: torch.Tensor) -> torch.Tensor:
    """float32 logits of increasing probability thresholds (G,): p > t exactly where logit > log(t/(1-t))."""
    return torch.logit(probabilities.double()).float()


def grid_intervals(logits: torch.Tensor, prob: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """``torch.bucketize(logits, boundaries)`` (how many boundaries lie below each logit; NaN above all) for the
    boundaries of a probability grid, :func:`logit_boundaries` of ``probability_grid(1 / S)``, without its
    binary search: int32, the shape of ``logits`` [N,C,H,W] (laid out channels_last).

    prob = sigmoid(logits) (float32, same shape). The interval i holds the logits whose probability lies in
    (i / S, (i + 1) / S], give or take the float32 errors of the sigmoid and of the boundaries (far below
    1 / (4 S) for any grid :func:`probability_grid` makes), so truncating S * prob - 1/4 gives i or i - 1; one
    comparison with the boundary above that guess tells which. No host synchronisation.
    """
    last = boundaries.numel()  # S - 1 boundaries: intervals 0..S-1
    never = torch.full((1,), float("nan"), dtype=logits.dtype, device=boundaries.device)  # compares False
    above = torch.cat([boundaries.to(logits.dtype), never])  # above[i]: the boundary at the top of interval i
    guess = pixel_major((prob * (last + 1)).sub_(0.25).nan_to_num_(float(last)).int().clamp_(0, last))
    interval = guess + (pixel_major(logits) > above.index_select(0, guess)).int()
    n, c, h, w = logits.shape
    return interval.view(n, h, w, c).permute(0, 3, 1, 2)


def interval_histograms(
    intervals: torch.Tensor,
    truth: torch.Tensor,
    valid: torch.Tensor | None,
    slots: int,
    predicted: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """Valid pixels per image, channel, class, interval and combination of ``predicted``: int64
    [N, C, 2, slots, 2**K]; summed over the last dimension, the histograms of :func:`threshold_histograms`.

    intervals [N,C,H,W] integers in 0..slots-1 (the grid interval of each logit); truth [N,C,H,W] bool
    (target >= 0.5); valid [N,1,H,W] (or [N,C,H,W]) bool or None; predicted: K bool [N,C,H,W], the pixels
    predicted positive at K other thresholds (bit k of the last index: at the k-th), so that one pass counts
    both. No host synchronisation.
    """
    n, c = intervals.shape[:2]
    combos = 1 << len(predicted)
    per_class = slots * combos
    first = torch.arange(n * c, device=intervals.device, dtype=torch.int32).view(n, c, 1, 1) * (2 * per_class)
    index = truth.int().mul_(per_class).add_(first).add_(intervals.int().mul_(combos))  # (image, channel, class, i)
    for bit, positive in enumerate(predicted):
        index.add_(positive.int().mul_(1 << bit))
    if valid is not None:
        index = torch.where(valid.bool(), index, n * c * 2 * per_class)  # invalid pixels go to a spare slot
    hist = slot_counts(pixel_major(index), n * c * 2 * per_class + 1)
    return hist[:-1].view(n, c, 2, slots, combos)


def prediction_counts(joint: torch.Tensor, bit: int) -> torch.Tensor:
    """tp, fp, fn, tn per image and channel at the threshold of ``bit``, from :func:`interval_histograms`'
    joint counts [N, C, 2, slots, 2**K]: int64 [N, C, 4] (what :func:`confusion_counts` gives there)."""
    n, c, _, _, combos = joint.shape
    by_class = joint.sum(dim=3).view(n, c, 2, combos >> (bit + 1), 2, 1 << bit).sum(dim=(3, 5))  # [N,C,truth,pred]
    return torch.stack([by_class[:, :, 1, 1], by_class[:, :, 0, 1], by_class[:, :, 1, 0], by_class[:, :, 0, 0]], -1)


def threshold_histograms(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    boundaries: torch.Tensor,
) -> torch.Tensor:
    """Valid pixels per image, channel, class and grid interval: int32 [N, C, 2, G+1].

    boundaries (G,) increasing logit thresholds. hist[n, c, y, i] counts the valid
    pixels of class y (0 negative, 1 positive) whose logit exceeds exactly i of the
    boundaries, i.e. boundaries[i-1] < logit <= boundaries[i]. A pixel is predicted
    positive at threshold k (0-based) where i > k. No host synchronisation.
    """
    check_shapes(logits, target, valid)
    interval = torch.bucketize(logits.contiguous(), boundaries.to(logits.dtype))  # (channels_last -> copy)
    return interval_histograms(interval, target >= 0.5, valid, boundaries.numel() + 1).squeeze(-1).int()


def _above(hist: torch.Tensor) -> torch.Tensor:
    """Pixels above each interval: above[..., i] = sum(hist[..., i:]) (int64)."""
    return hist.long().flip(-1).cumsum(-1).flip(-1)


def counts_at_every_threshold(hist: torch.Tensor) -> torch.Tensor:
    """tp, fp, fn, tn at every grid threshold from histograms [..., 2, G+1]: int64 [..., G, 4]."""
    above = _above(hist)
    total = above[..., 0:1]  # [..., 2, 1]
    tp, fp = above[..., 1, 1:], above[..., 0, 1:]
    return torch.stack([tp, fp, total[..., 1, :] - tp, total[..., 0, :] - fp], dim=-1)


def counts_at(hist: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tp, fp, fn, tn at grid threshold ``index[c]`` (long (C,)) per channel from
    histograms [..., C, 2, G+1]: int64 [..., C, 4]."""
    above = _above(hist)
    shape = (*above.shape[:-1], 1)
    picked = above.gather(-1, (index + 1).view(-1, 1, 1).expand(shape)).squeeze(-1)  # [..., C, 2]
    tp, fp = picked[..., 1], picked[..., 0]
    return torch.stack([tp, fp, above[..., 1, 0] - tp, above[..., 0, 0] - fp], dim=-1)


def best_threshold_indices(hist: torch.Tensor) -> torch.Tensor:
    """Per channel, the grid index maximising dataset-level Dice: long (C,).

    hist: dataset-level histograms [C, 2, G+1]. Both-empty scores 1 here (predicting
    nothing where nothing is present is right); ties go to the lowest threshold.
    """
    dice = dice_from_counts(counts_at_every_threshold(hist), empty="one")  # [C, G]
    return dice.argmax(dim=-1)


def log_q(effective_pos_weight: list[float] | torch.Tensor) -> torch.Tensor:
    """log(q_eff) as a float32 (C,1,1) logit shift for the prior-corrected threshold.

    ``effective_pos_weight``: C positive numbers (summary.json's ``effective_pos_weight``).
    The logarithm is taken in float64 and rounded once, so the shift does not depend on the
    float32 ``log`` of the torch build or CPU at hand.
    """
    q = torch.as_tensor(effective_pos_weight, dtype=torch.float64).flatten()
    if not bool((q > 0).all()):
        raise ValueError(f"effective_pos_weight must be positive, got {q.tolist()}")
    return q.log().float().view(-1, 1, 1)
