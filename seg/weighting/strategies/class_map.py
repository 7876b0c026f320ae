"""class_map: each pixel weighted by its true class, median-frequency weights (SegNet) from the training split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from seg.weighting.maps import class_weight_map, median_frequency_weights
from seg.weighting.registry import Strategy, register

if TYPE_CHECKING:
    from seg.config.schema import LossConfig
    from seg.config.specs import MaskSpec
    from seg.data.counts import MaskCounts


def class_counts(counts: MaskCounts, spec: MaskSpec) -> np.ndarray:
    """Pixel counts per class for the class-frequency map, for ``spec.fmt``.

    binary/instance: (negative, positive); index: the C classes; multilabel: the C channels, then
    the all-zero pixels (the "background" class).
    """
    positive = np.asarray(counts.positive_pixels)
    if spec.fmt in ("binary", "instance"):
        return np.array([counts.valid_pixels - positive[0], positive[0]])
    if spec.fmt == "index":
        return positive.copy()
    return np.append(positive, counts.all_zero_pixels)


@register("class_map")
class ClassMap(Strategy):
    """A [B,1,H,W] map of class weights (buffer ``class_weights``, clamped to ``loss.clamp``).

    summary.json: pos_weight null, ``weight_map_stats`` (mean applied weight and largest map
    weight of the epoch, per channel) and ``class_weights``.
    """

    class_weights: torch.Tensor

    def __init__(self, counts: MaskCounts, spec: MaskSpec, loss: LossConfig) -> None:
        super().__init__(counts, spec, loss)
        per_class, self.mask_format = class_counts(counts, spec), spec.fmt
        weights = np.clip(median_frequency_weights(per_class), loss.clamp[0], loss.clamp[1])
        self.register_buffer("class_weights", torch.as_tensor(weights, dtype=torch.float32))

    def batch_weight(self, batch: dict) -> torch.Tensor:
        return class_weight_map(batch["target"], batch["valid"], self.class_weights, self.mask_format)

    def report(self, train: dict, class_names: Sequence[str]) -> dict:
        mean = float(train["sums"].mean_applied_weight())
        return {
            "pos_weight": None,
            "weight_map_stats": {name: {"mean": mean, "max": train["map_max"]} for name in class_names},
            "class_weights": [float(w) for w in self.class_weights.cpu()],
        }
