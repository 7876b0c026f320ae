"""Calibration per channel: expected calibration error (ECE) and reliability tables (the math; the
reliability diagram is drawn by :mod:`seg.outputs.reliability`).

Each channel is a binary problem: the predicted probability p = sigmoid(logit) of the
positive class is compared with the observed frequency of positives. Valid pixels are
split into ``bins`` equal-width bins of p ([0, 1/bins), ..., [1 - 1/bins, 1]); per bin
we keep three sums (pixels, sum of p, positives) that add up over batches and DDP
ranks. Then, per channel, with n_b pixels, conf_b = mean p and freq_b = fraction of
positives in bin b:

    ECE = sum_b (n_b / n) * |freq_b - conf_b| = sum_b |positives_b - sum p_b| / n

The prior-corrected variant bins sigmoid(logit - log q_eff) instead (q_eff the effective
pos_weight): a model trained with pos_weight q estimates odds q times too high, and the
shift undoes that.
"""

from __future__ import annotations

import numpy as np
import torch

ECE_BINS = 15
PIXELS, PROB_SUM, POSITIVES = range(3)


def calibration_sums(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    log_q: torch.Tensor | float = 0.0,
    bins: int = ECE_BINS,
) -> torch.Tensor:
    """Per channel and probability bin: pixels, sum of p, positives. float64 [C, bins, 3].

    logits, target [N,C,H,W]; valid [N,1,H,W] bool or None; p = sigmoid(logits - log_q)
    with log_q a float or (C,1,1). No host synchronisation.
    """
    n, c = logits.shape[:2]
    prob = torch.sigmoid(logits.float() - log_q)
    which = (prob * bins).long().clamp_(max=bins - 1)
    truth = (target >= 0.5).long()
    index = (torch.arange(c, device=logits.device).view(1, c, 1, 1) * bins + which) * 2 + truth
    spare = c * bins * 2
    if valid is not None:
        index = torch.where(valid.bool(), index, spare)
    index = index.flatten()
    pixels = torch.zeros(spare + 1, dtype=torch.long, device=logits.device)
    pixels.scatter_add_(0, index, torch.ones(1, dtype=torch.long, device=logits.device).expand(index.numel()))
    prob_sum = torch.zeros(spare + 1, dtype=torch.float64, device=logits.device)
    prob_sum.scatter_add_(0, index, prob.double().flatten())
    by_class = pixels[:-1].view(c, bins, 2)
    return torch.stack(
        [by_class.sum(-1).double(), prob_sum[:-1].view(c, bins, 2).sum(-1), by_class[..., 1].double()], dim=-1
    )


def expected_calibration_error(sums: torch.Tensor) -> torch.Tensor:
    """ECE per channel from sums [C, bins, 3]: float64 (C,), NaN for a channel without pixels."""
    pixels = sums[..., PIXELS].sum(-1)
    gap = (sums[..., POSITIVES] - sums[..., PROB_SUM]).abs().sum(-1)
    return torch.where(pixels > 0, gap / pixels.clamp(min=1), torch.full_like(gap, float("nan")))


def reliability_table(sums: torch.Tensor) -> dict[str, np.ndarray]:
    """Per channel and bin: ``confidence`` (mean p), ``frequency`` (fraction positive),
    ``pixels``; NaN in empty bins. Arrays [C, bins]; ``edges`` (bins + 1,)."""
    table = sums.detach().double().cpu().numpy()
    pixels = table[..., PIXELS]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(pixels > 0, table[..., PROB_SUM] / pixels, np.nan)
        frequency = np.where(pixels > 0, table[..., POSITIVES] / pixels, np.nan)
    return {
        "confidence": confidence,
        "frequency": frequency,
        "pixels": pixels,
        "edges": np.linspace(0.0, 1.0, table.shape[1] + 1),
    }
