"""Calibration per channel: expected calibration error (ECE) and reliability diagrams.

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

from pathlib import Path

import numpy as np
import torch

from seg.outputs.figures import save_figure

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
    sums = sums.detach().double().cpu().numpy()
    pixels = sums[..., PIXELS]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(pixels > 0, sums[..., PROB_SUM] / pixels, np.nan)
        frequency = np.where(pixels > 0, sums[..., POSITIVES] / pixels, np.nan)
    return {
        "confidence": confidence,
        "frequency": frequency,
        "pixels": pixels,
        "edges": np.linspace(0.0, 1.0, sums.shape[1] + 1),
    }


def plot_reliability(
    curves: dict[str, dict[str, np.ndarray]],
    class_names: list[str],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Write a reliability diagram PNG: one panel per channel, one line per entry of
    ``curves`` (e.g. {"raw": reliability_table(...), "prior_corrected": ...}), the
    diagonal for perfect calibration, and as grey bars the share of pixels per bin of the first
    entry (log scale, right axis, topped at 2/3 of the height so the curves stay readable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(class_names))
    rows = -(-len(class_names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for c, name in enumerate(class_names):
        ax = axes[c // columns][c % columns]
        ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect")
        first = next(iter(curves.values()))
        edges, pixels = first["edges"], first["pixels"][c]
        share = pixels / max(pixels.sum(), 1)
        bars = ax.twinx()
        bars.bar(
            edges[:-1],
            np.where(share > 0, share, np.nan),
            width=np.diff(edges),
            align="edge",
            color="0.9",
            edgecolor="0.8",
            lw=0.5,
            zorder=0,
        )
        bars.set_yscale("log")
        bars.set_ylim(1e-6, 1e3)
        bars.set_yticks([1e-6, 1e-4, 1e-2, 1])
        bars.set_ylabel(f"share of pixels ({next(iter(curves))})", fontsize=7, color="0.5")
        bars.tick_params(labelsize=6, colors="0.5")
        ax.set_zorder(bars.get_zorder() + 1)
        ax.patch.set_visible(False)
        for label, table in curves.items():
            ax.plot(table["confidence"][c], table["frequency"][c], marker="o", ms=3, lw=1.2, label=label)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=name, xlabel="predicted probability")
        if c % columns == 0:
            ax.set_ylabel("observed frequency")
        ax.legend(fontsize=7, loc="upper left")
    for extra in range(len(class_names), rows * columns):
        axes[extra // columns][extra % columns].axis("off")
    return save_figure(fig, path, title)
