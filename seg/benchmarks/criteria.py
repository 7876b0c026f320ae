"""The loss as training builds it, for the sections that time a training step or a loss."""

from __future__ import annotations

from seg.config import BASE_CONFIG, MaskSpec, deep_merge, read_yaml, validate
from seg.data.counts import MaskCounts
from seg.losses import Criterion
from seg.weighting.registry import build_strategy


def project_criterion(weighting: str, terms: list[str], counts: MaskCounts, spec: MaskSpec) -> Criterion:
    """The criterion training builds (:func:`seg.training.build_criterion`) from the packaged defaults with
    ``loss.weighting`` and ``loss.terms`` set (border_map on one channel: instances from its connected
    components)."""
    loss: dict = {"weighting": weighting, "terms": [{"name": name} for name in terms]}
    if weighting == "border_map" and spec.fmt == "binary":
        loss["border"] = {"instances_from": "positive"}
    config = validate(deep_merge(read_yaml(BASE_CONFIG), {"loss": loss}), "benchmark").loss
    return Criterion(build_strategy(config, counts, spec), config.apply_as, config.normalize, config.terms)
