"""Bind a weighting strategy to a run: dataset counts in, one weight tensor per batch out.

The formulas are in :mod:`seg.weighting.formulas` and :mod:`seg.weighting.maps` (pure tensor
functions); this module chooses among them for ``loss.weighting`` and keeps the
little state a strategy needs (the per-batch EMA). ``batch_weight`` runs inside the
training step: no host synchronisation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from seg.weighting.formulas import (
    batch_counts,
    global_pos_weight,
    negative_counts,
    per_batch_pos_weight,
    per_channel_pos_weight,
)
from seg.weighting.maps import class_weight_map, median_frequency_weights

MAP_STRATEGIES = ("class_map", "border_map")


@dataclass(frozen=True)
class DatasetCounts:
    """Training-split counts the strategies need: per channel positives, valid and all-zero pixels."""

    positive: np.ndarray  # (C,) int64
    valid: int
    all_zero: int


@dataclass
class Weighting:
    """A strategy ready to weight batches. ``fixed`` is the global/per-channel weight, if any."""

    kind: str
    negatives: str
    clamp: tuple[float, float]
    dataset_pos_weight: torch.Tensor  # (C,1,1): per_batch fallback, and what the audit would recommend
    fixed: torch.Tensor | None = None
    class_weights: torch.Tensor | None = None
    class_mode: str = "binary"
    ema: float | None = None
    previous: torch.Tensor | None = field(default=None, repr=False)
    all_reduce: bool = False

    def to(self, device: torch.device) -> Weighting:
        for name in ("dataset_pos_weight", "fixed", "class_weights", "previous"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    def batch_weight(self, batch: dict) -> torch.Tensor | None:
        """The weight for one batch: None, () scalar, (C,1,1) or a [B,1,H,W] map."""
        target, valid = batch["target"], batch["valid"]
        if self.kind == "none":
            return None
        if self.kind in ("global", "per_channel"):
            return self.fixed
        if self.kind == "per_batch":
            counts = batch_counts(target, valid)
            if self.all_reduce:
                torch.distributed.all_reduce(counts)
            weight = per_batch_pos_weight(
                counts, self.dataset_pos_weight, self.negatives, self.clamp, self.previous, self.ema
            )
            self.previous = weight.detach()
            return weight
        weight = class_weight_map(target, valid, self.class_weights, self.class_mode)
        if self.kind == "border_map":
            weight = weight + batch["weight_map"] * valid
        return weight

    def reported_pos_weight(self) -> float | list[float] | None:
        """summary.json ``pos_weight``: a number (global), C numbers (per_channel, per_batch), else null."""
        if self.kind == "global":
            return float(self.fixed)
        if self.kind == "per_channel":
            return self.fixed.flatten().tolist()
        return None


def class_counts(counts: DatasetCounts, mask_format: str) -> tuple[np.ndarray, str]:
    """Pixel counts per class for the class-frequency map, and the class_weight_map mode."""
    if mask_format in ("binary", "instance"):
        return np.array([counts.valid - counts.positive[0], counts.positive[0]]), "binary"
    if mask_format == "index":
        return counts.positive.copy(), "index"
    return np.append(counts.positive, counts.all_zero), "multilabel"


def build_weighting(
    kind: str,
    counts: DatasetCounts,
    mask_format: str,
    negatives: str,
    clamp: tuple[float, float],
    ema: float | None = None,
) -> Weighting:
    """Dataset-level weights for ``kind`` (from training-split counts only)."""
    positive = torch.as_tensor(counts.positive, dtype=torch.float64)
    negative = negative_counts(
        positive,
        torch.tensor(float(counts.valid), dtype=torch.float64),
        torch.tensor(float(counts.all_zero), dtype=torch.float64),
        negatives,
    )
    if kind in ("global", "per_channel", "per_batch") and (positive == 0).any():
        empty = [str(c) for c in np.flatnonzero(counts.positive == 0)]
        warnings.warn(
            f"channel(s) {', '.join(empty)} have no positive pixels in the training split: "
            f"their pos_weight is clamped to {clamp[1]}",
            stacklevel=2,
        )
    dataset_pos_weight = per_channel_pos_weight(positive, negative, clamp)
    weighting = Weighting(kind=kind, negatives=negatives, clamp=clamp, dataset_pos_weight=dataset_pos_weight, ema=ema)
    if kind == "global":
        weighting.fixed = global_pos_weight(positive, negative, clamp)
    elif kind == "per_channel":
        weighting.fixed = dataset_pos_weight
    elif kind in MAP_STRATEGIES:
        per_class, weighting.class_mode = class_counts(counts, mask_format)
        weights = np.clip(median_frequency_weights(per_class), clamp[0], clamp[1])
        weighting.class_weights = torch.as_tensor(weights, dtype=torch.float32)
    return weighting
