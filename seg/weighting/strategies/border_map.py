"""border_map: the U-Net weight map, class_map's class weights plus the border term between instances."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from seg.data.formats import decode_instances
from seg.data.reading import read_raw
from seg.weighting.border import border_weight_map, connected_instances
from seg.weighting.cache import WeightMapCache
from seg.weighting.registry import SampleMap, register
from seg.weighting.strategies.class_map import ClassMap

if TYPE_CHECKING:
    from seg.config.schema import LossConfig
    from seg.data.folders import Sample


@register("border_map")
class BorderMap(ClassMap):
    """class_map + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on valid pixels outside every instance.

    The border term is per sample (:meth:`sample_map`, cached per file): the dataset adds it to
    each item as ``weight_map``; the class weights are added per batch.
    """

    @classmethod
    def check_config(cls, loss: LossConfig, mask_format: str) -> None:
        if mask_format == "index":
            raise ValueError(
                "loss.weighting: border_map needs instances; index masks (e.g. CamVid) have none. "
                "Use class_map, per_channel or per_batch"
            )
        if loss.border.instances_from != "instance" and mask_format != "binary":
            raise ValueError(
                f"loss.border.instances_from: {loss.border.instances_from} (connected components of one class) "
                f"needs a binary mask; with {mask_format} masks use instance (labels in instances/ beside masks/)"
            )

    @classmethod
    def needs_instances(cls, loss: LossConfig) -> bool:
        return loss.border.instances_from == "instance"

    @classmethod
    def sample_map(cls, loss: LossConfig, cache_dir: Path | None) -> SampleMap:
        """(sample, target, valid) -> float32 [H,W]: the border term, from the instance labels or
        the connected components of the positive (or valid negative) class, cached per file."""
        border = loss.border
        cache = WeightMapCache(cache_dir)
        params = {
            "w0": border.w0,
            "sigma": border.sigma,
            "from": border.instances_from,
            "connectivity": border.connectivity,
        }

        def compute(source: Path, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
            if border.instances_from == "instance":  # source: the instance label file
                instances = decode_instances(read_raw(source, palette_indices=True), source)
            else:
                channel = target[..., 0] > 0
                chosen = channel if border.instances_from == "positive" else ~channel & valid
                instances = connected_instances(chosen, border.connectivity)
            return border_weight_map(instances, border.w0, border.sigma)

        def sample_map(sample: Sample, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
            source = sample.instances if border.instances_from == "instance" else sample.masks[0]
            assert source is not None  # needs_instances: find_splits paired every mask with its instances
            return cache.get(source, params, lambda: compute(source, target, valid))

        return sample_map

    def batch_weight(self, batch: dict) -> torch.Tensor:
        return super().batch_weight(batch) + batch["weight_map"] * batch["valid"]
