"""Structure metrics of a whole evaluation pass: keep the predictions, then score the objects per threshold policy.

The per-image math (V_rand, V_info, object AP, merges and splits) is :mod:`seg.scoring.structure`.
This module holds the pass's logits on the host (float16, cropped to the valid region) so that
every threshold policy, the tuned one included (known only at the end of the pass), is scored on
the same predictions. It runs at evaluation and on the last epoch's validation only, off the
training hot path (it synchronises with the host once per batch).

The ``structure`` block (summary.json ``val`` and eval-<split>.json ``metrics``)::

    {"metrics": [...], "objects_from": ..., "connectivity": 4, "num_images": n, "note": ...,
     "by_threshold": {policy: {"mean": {key: x}, "per_channel": {name: {key: x}}}}}

Each value is the mean over images (NaN left out, null where no image has one); ``mean`` is the mean
over channels. Counts (merges, splits, objects) are means per image and are not in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from seg.distributed import merge_dicts
from seg.scoring.structure import image_structure, mean_structure

NOTE = (
    "per image at each policy's thresholds, unthinned, then the mean over images (the ISBI 2012 challenge "
    "reports the best over thresholds after thinning the membranes)"
)
InstanceReader = Callable[[int], np.ndarray | None]  # dataset index -> instance labels [H,W] (objects_from instance)


@dataclass(frozen=True)
class StructureSettings:
    """What to score: ``metrics`` (rand, vi, object_ap), where objects come from, the connectivity, and
    (for ``objects_from: instance``) how to read an image's instance labels by dataset index."""

    metrics: tuple[str, ...]
    objects_from: str
    connectivity: int = 4
    instances: InstanceReader | None = None


class StructureAccumulator:
    """Collects per-image logits of a pass; :meth:`compute` scores them at given probability thresholds."""

    def __init__(self, settings: StructureSettings) -> None:
        self.settings = settings
        self.images: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # index, logits, truth, valid

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, index) -> None:
        """logits, target [N,C,H,W]; valid [N,1,H,W] or None; index: the items' dataset indices (N,)."""
        logits_np = logits.float().cpu().numpy().astype(np.float16)
        truth_np = (target >= 0.5).cpu().numpy()
        valid_np = np.ones((logits.shape[0], *logits.shape[2:]), bool) if valid is None else valid[:, 0].cpu().numpy()
        for i, item in enumerate(np.asarray(torch.as_tensor(index).cpu())):
            rows, cols = np.nonzero(valid_np[i].any(axis=1))[0], np.nonzero(valid_np[i].any(axis=0))[0]
            h = int(rows[-1]) + 1 if rows.size else 0
            w = int(cols[-1]) + 1 if cols.size else 0  # padding is bottom/right: crop it off
            self.images.append((int(item), logits_np[i, :, :h, :w], truth_np[i, :, :h, :w], valid_np[i, :h, :w]))

    def per_image(self, logit_thresholds: torch.Tensor, class_names: Sequence[str]) -> dict[int, dict[str, dict]]:
        """{dataset index: {channel: {key: value}}} at logit thresholds (C,)."""
        s = self.settings
        out: dict[int, dict[str, dict]] = {}
        for index, logits, truth, valid in self.images:
            instances = s.instances(index) if s.instances is not None else None
            if instances is not None:
                instances = instances[: truth.shape[1], : truth.shape[2]]
            out[index] = {
                name: image_structure(
                    truth[c],
                    logits[c].astype(np.float32) > float(logit_thresholds[c]),
                    valid,
                    s.metrics,
                    s.objects_from,
                    s.connectivity,
                    instances,
                )
                for c, name in enumerate(class_names)
            }
        return out

    def compute(
        self, thresholds: dict[str, torch.Tensor], class_names: Sequence[str]
    ) -> tuple[dict, dict[str, dict[int, dict[str, float | None]]]]:
        """The ``structure`` block for probability thresholds per policy ({policy: (C,)}), and per policy
        {dataset index: {key: mean over channels}} for the per-image statistics of the comparison."""
        by_threshold, per_image = {}, {}
        for policy, probabilities in thresholds.items():
            scores = merge_dicts(self.per_image(torch.logit(probabilities.double()), class_names))  # DDP: all ranks
            scores = dict(sorted(scores.items()))  # dataset order, whichever rank scored an image
            per_channel = {name: mean_structure([scores[i][name] for i in scores]) for name in class_names}
            by_threshold[policy] = {"mean": _channel_mean(list(per_channel.values())), "per_channel": per_channel}
            per_image[policy] = {i: _channel_mean(list(channels.values())) for i, channels in scores.items()}
        block = {
            "metrics": list(self.settings.metrics),
            "objects_from": self.settings.objects_from,
            "connectivity": self.settings.connectivity,
            "num_images": len(scores),
            "note": NOTE,
            "by_threshold": by_threshold,
        }
        return block, per_image


def _channel_mean(blocks: list[dict]) -> dict[str, float | None]:
    """Mean over channels of each key (None and NaN left out; None where no channel has a value)."""
    keys = list(dict.fromkeys(k for b in blocks for k in b))
    out: dict[str, float | None] = {}
    for key in keys:
        values = [float(b[key]) for b in blocks if b.get(key) is not None and not math.isnan(float(b[key]))]
        out[key] = sum(values) / len(values) if values else None
    return out
