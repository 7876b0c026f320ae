"""From a validated config to datasets: find files, split, check, count, wire maps.

Everything that can refuse bad input runs here, before a run directory exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.config import Config, expand_path, mask_spec
from seg.data.dataset import SegmentationDataset, check_image_sizes
from seg.data.folders import Sample, split_samples
from seg.data.formats import MaskSpec, decode_instances, read_raw
from seg.data.synthetic import ensure_synthetic
from seg.data.transforms import eval_transform, train_transform
from seg.data.counts import MaskCounts, check_positive_values, count_masks
from seg.weighting.maps import WeightMapCache, border_weight_map, connected_instances


@dataclass
class RunData:
    spec: MaskSpec
    train_samples: list[Sample]
    val_samples: list[Sample]
    val_stems: list[str]
    train_counts: MaskCounts


def prepare_data(cfg: Config, progress: bool = True) -> RunData:
    """Find, split and check the data; count the training masks (every value is checked).

    Raises DataError when a configured ``positive_values`` entry occurs in no training mask.
    """
    root = expand_path(cfg.data.root)
    if cfg.data.synthetic:
        ensure_synthetic(root)
    spec = mask_spec(cfg)
    need_instances = cfg.loss.weighting == "border_map" and cfg.loss.border.instances_from == "instance"
    train, val, val_stems = split_samples(root, spec, cfg.data.val_fraction, cfg.data.split_seed,
                                          cfg.data.val_stems, need_instances)
    if cfg.data.max_val_images:
        val = val[: cfg.data.max_val_images]
    check_image_sizes(train + val, spec)
    train_counts = count_masks(train, spec, progress=progress)
    check_positive_values(train_counts, spec, root)  # a positive value in no training mask: all-empty targets
    count_masks(val, spec, progress=progress)  # validation masks are checked too, never used for weights
    return RunData(spec, train, val, val_stems, train_counts)


def border_term_map(cfg: Config, cache: WeightMapCache):
    """A function (sample, target, valid) -> float32 [H,W]: the border term of the U-Net map.

    The class-frequency part w_c is added per batch (it depends only on the target);
    this is w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) outside every instance, cached per file.
    """
    border = cfg.loss.border
    params = {"w0": border.w0, "sigma": border.sigma, "from": border.instances_from,
              "connectivity": border.connectivity}

    def compute(sample: Sample, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if border.instances_from == "instance":
            instances = decode_instances(read_raw(sample.instances, palette_indices=True), sample.instances)
        else:
            channel = target[..., 0] > 0
            chosen = channel if border.instances_from == "positive" else ~channel & valid
            instances = connected_instances(chosen, border.connectivity)
        return border_weight_map(instances, 0.0, border.w0, border.sigma)

    def sample_map(sample: Sample, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
        key = sample.instances if border.instances_from == "instance" else sample.masks[0]
        return cache.get(key, params, lambda: compute(sample, target, valid))

    return sample_map


def build_datasets(cfg: Config, data: RunData, cache_dir: Path | None) -> tuple[SegmentationDataset, SegmentationDataset]:
    sample_map = None
    if cfg.loss.weighting == "border_map":
        sample_map = border_term_map(cfg, WeightMapCache(cache_dir))
    train = SegmentationDataset(data.train_samples, data.spec, train_transform(cfg.data.image_size),
                                length=cfg.data.samples_per_epoch, seed=cfg.run.seed, sample_map=sample_map)
    val = SegmentationDataset(data.val_samples, data.spec, eval_transform())
    return train, val
