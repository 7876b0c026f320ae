"""per_channel: a fixed pos_weight per channel, neg_c / pos_c over the training split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from seg.weighting.registry import Strategy, dataset_pos_weight, register, warn_empty_channels

if TYPE_CHECKING:
    from seg.config.schema import LossConfig
    from seg.config.specs import MaskSpec
    from seg.data.counts import MaskCounts


@register("per_channel")
class PerChannel(Strategy):
    """A fixed (C,1,1) pos_weight (buffer ``fixed``); summary.json reports its C numbers."""

    fixed: torch.Tensor

    def __init__(self, counts: MaskCounts, spec: MaskSpec, loss: LossConfig) -> None:
        super().__init__(counts, spec, loss)
        clamp = loss.clamp
        warn_empty_channels(counts, clamp)
        self.register_buffer("fixed", dataset_pos_weight(counts, loss.negatives, clamp))

    def batch_weight(self, batch: dict) -> torch.Tensor:
        return self.fixed

    def report(self, train: dict, class_names: Sequence[str]) -> dict:
        return {"pos_weight": self.fixed.flatten().tolist()}
