"""none: no weight, plain binary cross-entropy (the baseline)."""

from __future__ import annotations

from seg.weighting.registry import Strategy, register


@register("none")
class NoWeighting(Strategy):
    """Every element weighs 1: ``batch_weight`` is None and summary.json's pos_weight null."""
