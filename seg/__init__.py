"""seg: segmentation under class imbalance, done right and measured.

The public API, for a training loop of your own (README: "Use seg in your own training loop"):

- the loss: :class:`WeightedBCELoss` (an ``nn.Module``; ``WeightedBCELoss.from_masks`` computes seg's weights);
- the weights: :func:`global_pos_weight`, :func:`per_channel_pos_weight`, :func:`per_batch_pos_weight` with
  :func:`batch_counts`, :func:`median_frequency_weights`, :func:`class_weight_map`, :func:`border_weight_map`,
  :func:`connected_instances`;
- the metrics: :func:`confusion_counts` (integer counts on the device), then :func:`dice_score`,
  :func:`iou_score`, :func:`dice_from_counts`, :func:`iou_from_counts`;
- training from a config: :func:`train_from_config`.

Each name is imported on first use (PEP 562): ``import seg`` does not import torch, so that the
commands' ``--help`` stays quick. No public name is a submodule's name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "WeightedBCELoss",
    "batch_counts",
    "border_weight_map",
    "class_weight_map",
    "confusion_counts",
    "connected_instances",
    "dice_from_counts",
    "dice_score",
    "global_pos_weight",
    "iou_from_counts",
    "iou_score",
    "median_frequency_weights",
    "per_batch_pos_weight",
    "per_channel_pos_weight",
    "train_from_config",
]

_MODULES = {  # the module that defines each public name
    "seg.losses.weighted_bce_loss": ("WeightedBCELoss",),
    "seg.weighting.formulas": ("batch_counts", "global_pos_weight", "per_batch_pos_weight", "per_channel_pos_weight"),
    "seg.weighting.maps": ("class_weight_map", "median_frequency_weights"),
    "seg.weighting.border": ("border_weight_map", "connected_instances"),
    "seg.scoring.metrics": ("confusion_counts", "dice_from_counts", "dice_score", "iou_from_counts", "iou_score"),
    "seg.from_config": ("train_from_config",),
}
_SOURCE = {name: module for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:
    from seg.from_config import train_from_config
    from seg.losses.weighted_bce_loss import WeightedBCELoss
    from seg.scoring.metrics import confusion_counts, dice_from_counts, dice_score, iou_from_counts, iou_score
    from seg.weighting.border import border_weight_map, connected_instances
    from seg.weighting.formulas import batch_counts, global_pos_weight, per_batch_pos_weight, per_channel_pos_weight
    from seg.weighting.maps import class_weight_map, median_frequency_weights


def __getattr__(name: str) -> Any:
    """Import a public name on first use (then it is a plain attribute of the module)."""
    if name not in _SOURCE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
