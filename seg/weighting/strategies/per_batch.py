"""per_batch: pos_weight per channel from each batch's counts (summed over DDP ranks), optionally an EMA."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from seg.distributed import all_reduce_counts
from seg.weighting.formulas import batch_counts, ema_blend, per_batch_pos_weight
from seg.weighting.registry import Strategy, dataset_pos_weight, register, warn_empty_channels

if TYPE_CHECKING:
    from seg.config.schema import LossConfig
    from seg.config.specs import MaskSpec
    from seg.data.counts import MaskCounts


@register("per_batch")
class PerBatch(Strategy):
    """neg_c / pos_c of the batch, (C,1,1); a channel undefined in the batch takes the dataset value.

    Buffers: ``dataset_pos_weight`` (the fallback), and the EMA state ``previous`` with its flag
    ``has_previous`` (False until the first batch): with ``loss.ema`` = m the weight is
    m * previous + (1 - m) * current, the current value alone on the first batch, chosen with
    ``torch.where`` (no host sync). The state is in ``state_dict()``, so a resumed run continues it.
    summary.json's pos_weight is the epoch's mean per-channel weight.
    """

    dataset_pos_weight: torch.Tensor
    previous: torch.Tensor
    has_previous: torch.Tensor

    def __init__(self, counts: MaskCounts, spec: MaskSpec, loss: LossConfig) -> None:
        super().__init__(counts, spec, loss)
        self.negatives, self.clamp, self.ema = loss.negatives, loss.clamp, loss.ema
        warn_empty_channels(counts, self.clamp)
        fallback = dataset_pos_weight(counts, self.negatives, self.clamp)
        self.register_buffer("dataset_pos_weight", fallback)
        self.register_buffer("previous", torch.zeros_like(fallback))
        self.register_buffer("has_previous", torch.zeros((), dtype=torch.bool))

    def batch_weight(self, batch: dict) -> torch.Tensor:
        counts = all_reduce_counts(batch_counts(batch["target"], batch["valid"]))  # DDP: the global batch
        weight = per_batch_pos_weight(counts, self.dataset_pos_weight, self.negatives, self.clamp)
        if self.ema is not None:
            weight = torch.where(self.has_previous, ema_blend(self.previous, weight, self.ema), weight)
        self.previous.copy_(weight.detach())
        self.has_previous.fill_(True)
        return weight

    def report(self, train: dict, class_names: Sequence[str]) -> dict:
        return {"pos_weight": train["mean_channel_weight"]}
