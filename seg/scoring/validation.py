"""Validation accumulator: counts at every threshold policy, histograms and calibration, on the device.

Used by training's per-epoch validation and by scripts/evaluate.py (one
implementation). ``update`` makes no host synchronisation (its work is the pure
:func:`batch_statistics`, checked under ``torch.compile(fullgraph=True)``);
``compute`` combines ranks under DDP, divides once and returns the ``val`` block of
summary.json.

Threshold policies, all three reported in ``val.by_threshold``:

- ``0.5``: logit > 0;
- ``prior_corrected``: logit > log q_eff per channel (q_eff the effective pos_weight),
  i.e. probability > q / (1 + q);
- ``tuned``: per channel, the probability threshold on a grid (0.01..0.99 by default)
  that maximises dataset-level Dice on the data evaluated, found from histograms of
  the logits of positives and negatives (no second pass). Tuned on the same images it
  is scored on, so optimistic: the block says so in ``note``. Pass ``tuned_thresholds``
  (probabilities found on validation) to apply fixed thresholds to another split.

The ``val`` block (all values plain floats, null where undefined):

- ``dice``, ``iou`` (macro), ``micro`` {dice, iou}, ``per_image`` {dice, iou},
  ``per_channel`` {name: {dice, iou}}, ``empty_image_fp_rate`` {name: x} (among images whose
  ground truth is empty in that channel, the fraction with any predicted pixel),
  ``thresholds`` {name: probability}: all at ``threshold`` (metrics.threshold);
- ``by_threshold`` {"0.5" | "prior_corrected" | "tuned": a block with those same keys;
  "tuned" adds ``note``};
- ``ece`` {"bins": 15, "raw": {name: x}, "prior_corrected": {name: x}, "raw_mean",
  "prior_corrected_mean"} (means over channels with valid pixels);
- ``threshold``, ``empty_policy``, ``num_images``.

Under DDP, per-image counts and histograms are gathered (ranks hold different images)
and calibration sums all-reduced; dataset-level scores are then exact provided every
image is evaluated by exactly one rank. Every rank must call ``compute``.
"""

from __future__ import annotations

import torch

from seg.config.schema import MetricsConfig
from seg.distributed import all_gather_rows, all_reduce_counts
from seg.scoring.calibration import ECE_BINS, calibration_sums, expected_calibration_error, reliability_table
from seg.scoring.metrics import EMPTY_POLICIES, confusion_counts, score_block, to_float
from seg.scoring.policies import FIXED_NOTE, POLICIES, TUNED_NOTE
from seg.scoring.thresholds import (
    best_threshold_indices,
    counts_at,
    logit_boundaries,
    probability_grid,
    threshold_histograms,
)


def batch_statistics(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    log_q: torch.Tensor,
    boundaries: torch.Tensor,
    ece_bins: int = ECE_BINS,
    tuned_logits: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One validation batch, pure and without host synchronisation.

    logits, target [N,C,H,W]; valid [N,1,H,W] bool or None; log_q (C,1,1);
    boundaries (G,) logit grid; tuned_logits (C,1,1) fixed tuned thresholds or None.
    Returns per-image counts ``0.5`` / ``prior_corrected`` (/ ``tuned``) int64 [N,C,4],
    ``histograms`` int32 [N,C,2,G+1], ``ece_raw`` / ``ece_prior_corrected`` float64 [C,bins,3].
    """
    logits = logits.float()
    stats = {
        "0.5": confusion_counts(logits, target, valid, 0.0),
        "prior_corrected": confusion_counts(logits, target, valid, log_q),
        "histograms": threshold_histograms(logits, target, valid, boundaries),
        "ece_raw": calibration_sums(logits, target, valid, 0.0, ece_bins),
        "ece_prior_corrected": calibration_sums(logits, target, valid, log_q, ece_bins),
    }
    if tuned_logits is not None:
        stats["tuned"] = confusion_counts(logits, target, valid, tuned_logits)
    return stats


def _channel_vector(value: torch.Tensor | list | None, num_channels: int, what: str, default: float) -> torch.Tensor:
    """A per-channel value as float32 (C,1,1); (C,) and (C,1,1) accepted, anything else refused."""
    if value is None:
        return torch.full((num_channels, 1, 1), default)
    value = torch.as_tensor(value, dtype=torch.float32)
    if value.shape not in ((num_channels,), (num_channels, 1, 1)):
        raise ValueError(f"{what} must have shape ({num_channels},) or ({num_channels},1,1); got {tuple(value.shape)}")
    return value.reshape(num_channels, 1, 1)


class Evaluator:
    """Accumulates one pass over validation data; ``compute`` gives the ``val`` block.

    log_q: (C,1,1) or (C,) logit shift log(q_eff) for ``prior_corrected`` (zeros when unweighted).
    empty: score where truth and prediction are both empty (nan | one | zero).
    grid_step: spacing of the probability grid searched by ``tuned``.
    tuned_thresholds: (C,) probabilities to use for ``tuned`` instead of searching.
    threshold: the policy whose scores ``compute`` reports at the top level (one of POLICIES).
    Memory per image: C*(3*4*8 + 2*(G+1)*4) bytes (C=12, G=99: about 10 KB).
    """

    def __init__(
        self,
        num_channels: int,
        device: torch.device | str,
        log_q: torch.Tensor | None = None,
        empty: str = "nan",
        grid_step: float = 0.01,
        ece_bins: int = ECE_BINS,
        tuned_thresholds: torch.Tensor | list[float] | None = None,
        threshold: str = "0.5",
    ) -> None:
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
        if threshold not in POLICIES:
            raise ValueError(f"threshold must be one of {POLICIES}, got {threshold!r}")
        self.threshold = threshold
        self.num_channels = num_channels
        self.device = torch.device(device)
        self.empty = empty
        self.ece_bins = ece_bins
        self.log_q = _channel_vector(log_q, num_channels, "log_q", 0.0).to(self.device)
        self.grid = probability_grid(grid_step)
        self.boundaries = logit_boundaries(self.grid).to(self.device)
        self.tuned_thresholds = None
        self.tuned_logits = None
        if tuned_thresholds is not None:
            self.tuned_thresholds = _channel_vector(tuned_thresholds, num_channels, "tuned_thresholds", 0.5)
            self.tuned_logits = torch.logit(self.tuned_thresholds.double()).float().to(self.device)
        self.reset()

    @classmethod
    def from_config(
        cls,
        metrics: MetricsConfig,
        num_channels: int,
        device: torch.device | str,
        log_q: torch.Tensor | None = None,
        tuned_thresholds: torch.Tensor | list[float] | None = None,
    ) -> Evaluator:
        """An Evaluator with the config's ``metrics.empty`` and ``metrics.threshold`` (their one reader)."""
        return cls(
            num_channels, device, log_q, metrics.empty, tuned_thresholds=tuned_thresholds, threshold=metrics.threshold
        )

    def reset(self) -> None:
        """Forget everything accumulated (start of a new validation pass)."""
        self.parts: dict[str, list[torch.Tensor]] = {"0.5": [], "prior_corrected": [], "tuned": [], "histograms": []}
        zeros = torch.zeros(self.num_channels, self.ece_bins, 3, dtype=torch.float64, device=self.device)
        self.ece = {"raw": zeros, "prior_corrected": zeros.clone()}

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """logits, target [N,C,H,W]; valid [N,1,H,W] bool (None: every pixel). No host sync."""
        if logits.shape[1] != self.num_channels:
            raise ValueError(f"Evaluator has {self.num_channels} channels, logits have {logits.shape[1]}")
        stats = batch_statistics(logits, target, valid, self.log_q, self.boundaries, self.ece_bins, self.tuned_logits)
        for name in ("0.5", "prior_corrected", "tuned", "histograms"):
            if name in stats:
                self.parts[name].append(stats[name])
        self.ece["raw"] += stats["ece_raw"]
        self.ece["prior_corrected"] += stats["ece_prior_corrected"]

    def _gathered(self, name: str, trailing: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        parts = self.parts[name]
        local = torch.cat(parts) if parts else torch.zeros((0, *trailing), dtype=dtype, device=self.device)
        return all_gather_rows(local)

    def _reduced_ece(self) -> dict[str, torch.Tensor]:
        return {name: all_reduce_counts(sums.clone()).cpu() for name, sums in self.ece.items()}

    def collect(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-image counts [N,C,4] (CPU, images of all ranks) and probability thresholds
        (C,) float64 under each policy; the tuned search runs here, on the summed histograms."""
        c, slots = self.num_channels, self.boundaries.numel() + 1
        counts = {name: self._gathered(name, (c, 4), torch.long).cpu() for name in ("0.5", "prior_corrected")}
        thresholds = {
            "0.5": torch.full((c,), 0.5, dtype=torch.float64),
            "prior_corrected": torch.sigmoid(self.log_q.double().flatten().cpu()),
        }
        if self.tuned_thresholds is not None:
            counts["tuned"] = self._gathered("tuned", (c, 4), torch.long).cpu()
            thresholds["tuned"] = self.tuned_thresholds.double().flatten()
        else:
            histograms = self._gathered("histograms", (c, 2, slots), torch.int32).cpu()
            index = best_threshold_indices(histograms.long().sum(dim=0))
            counts["tuned"] = counts_at(histograms, index)
            thresholds["tuned"] = self.grid[index]
        return counts, thresholds

    def compute(self, class_names: list[str], threshold: str | None = None) -> dict:
        """The summary ``val`` block: the chosen threshold's scores (``threshold``, default the
        Evaluator's), plus ``by_threshold``, ``ece``, ``empty_policy``, ``threshold`` and ``num_images``."""
        threshold = self.threshold if threshold is None else threshold
        if threshold not in POLICIES:
            raise ValueError(f"threshold must be one of {POLICIES}, got {threshold!r}")
        if len(class_names) != self.num_channels:
            raise ValueError(f"{len(class_names)} class names for {self.num_channels} channels")
        counts, thresholds = self.collect()
        by_threshold = {}
        for name in POLICIES:
            block = score_block(counts[name], class_names, self.empty)
            block["thresholds"] = {n: round(float(p), 6) for n, p in zip(class_names, thresholds[name], strict=False)}
            by_threshold[name] = block
        by_threshold["tuned"]["note"] = FIXED_NOTE if self.tuned_thresholds is not None else TUNED_NOTE
        return {
            **by_threshold[threshold],
            "threshold": threshold,
            "empty_policy": self.empty,
            "num_images": int(counts["0.5"].shape[0]),
            "by_threshold": by_threshold,
            "ece": self._ece_block(class_names),
        }

    def _ece_block(self, class_names: list[str]) -> dict:
        block: dict = {"bins": self.ece_bins}
        for name, sums in self._reduced_ece().items():
            ece = expected_calibration_error(sums)
            block[name] = {n: to_float(ece[c]) for c, n in enumerate(class_names)}
            block[f"{name}_mean"] = to_float(ece.nanmean())
        return block

    def reliability(self) -> dict[str, dict]:
        """Reliability tables ({"raw": ..., "prior_corrected": ...}) for the reliability plot."""
        return {name: reliability_table(sums) for name, sums in self._reduced_ece().items()}
