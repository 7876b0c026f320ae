"""Thresholds: the grid searched by ``tuned``, logit histograms per grid interval, and log_q.

:func:`threshold_histograms` counts, per image and channel, the valid pixels of each class
(negative, positive) between consecutive thresholds of a grid; :func:`counts_at_every_threshold`
and :func:`counts_at` turn the cumulative sums into tp, fp, fn, tn at any grid threshold, so a
threshold can be tuned after the pass without running the model again. :func:`log_q` is the
logit shift of the ``prior_corrected`` policy. The policy names are in :mod:`seg.scoring.policies`.
"""

from __future__ import annotations

import torch

from seg.scoring.metrics import check_shapes, dice_from_counts


def probability_grid(step: float = 0.01) -> torch.Tensor:
    """Probability thresholds step, 2*step, ..., 1 - step as float64 (G,): 0.01..0.99 by default."""
    steps = round(1.0 / step)
    if steps < 2 or abs(steps * step - 1.0) > 1e-9:
        raise ValueError(f"step must divide 1 into at least 2 parts, got {step}")
    return torch.arange(1, steps, dtype=torch.float64) / steps


def logit_boundaries(probabilities: torch.Tensor) -> torch.Tensor:
    """float32 logits of increasing probability thresholds (G,): p > t exactly where logit > log(t/(1-t))."""
    return torch.logit(probabilities.double()).float()


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
    n, c = logits.shape[:2]
    slots = boundaries.numel() + 1
    interval = torch.bucketize(logits.contiguous(), boundaries.to(logits.dtype))  # (channels_last -> copy)
    truth = (target >= 0.5).long()
    image_channel = torch.arange(n * c, device=logits.device).view(n, c, 1, 1)
    index = (image_channel * 2 + truth) * slots + interval
    if valid is not None:
        index = torch.where(valid.bool(), index, n * c * 2 * slots)  # invalid pixels go to a spare slot
    hist = torch.zeros(n * c * 2 * slots + 1, dtype=torch.long, device=logits.device)
    hist.scatter_add_(0, index.flatten(), torch.ones(1, dtype=torch.long, device=logits.device).expand(index.numel()))
    return hist[:-1].view(n, c, 2, slots).int()


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
