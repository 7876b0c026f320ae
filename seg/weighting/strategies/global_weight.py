"""global: one pos_weight for every channel, sum_c neg_c / sum_c pos_c over the training split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from seg.weighting.formulas import global_pos_weight
from seg.weighting.registry import Strategy, count_tensors, register, warn_empty_channels

if TYPE_CHECKING:
    from seg.config.schema import LossConfig
    from seg.config.specs import MaskSpec
    from seg.data.counts import MaskCounts


@register("global")
class GlobalWeight(Strategy):
    """A fixed () scalar pos_weight (buffer ``fixed``); summary.json reports it as one number."""

    fixed: torch.Tensor

    def __init__(self, counts: MaskCounts, spec: MaskSpec, loss: LossConfig) -> None:
        super().__init__(counts, spec, loss)
        clamp = loss.clamp
        warn_empty_channels(counts, clamp)
        self.register_buffer("fixed", global_pos_weight(*count_tensors(counts, loss.negatives), clamp))

    def batch_weight(self, batch: dict) -> torch.Tensor:
        return self.fixed

    def report(self, train: dict, class_names: Sequence[str]) -> dict:
        return {"pos_weight": float(self.fixed)}
