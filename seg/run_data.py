"""From a validated config to datasets: find files, split, check, count, wire the strategy's per-sample map.

Everything that can refuse bad input runs here, before a run directory exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seg.config import Config, expand_path, mask_spec
from seg.config.specs import MaskSpec
from seg.data.counts import MaskCounts, check_positive_values, count_masks
from seg.data.dataset import SegmentationDataset, check_image_sizes
from seg.data.folders import Sample, split_samples
from seg.data.synthetic import ensure_synthetic
from seg.data.transforms import eval_transform, train_transform
from seg.weighting.registry import strategy_for


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
    need_instances = strategy_for(cfg.loss).needs_instances(cfg.loss)
    train, val, val_stems = split_samples(
        root, spec, cfg.data.val_fraction, cfg.data.split_seed, cfg.data.val_stems, need_instances
    )
    if cfg.data.max_val_images:
        val = val[: cfg.data.max_val_images]
    check_image_sizes(train + val, spec)
    train_counts = count_masks(train, spec, progress=progress)
    check_positive_values(train_counts, spec, root)  # a positive value in no training mask: all-empty targets
    count_masks(val, spec, progress=progress)  # validation masks are checked too, never used for weights
    return RunData(spec, train, val, val_stems, train_counts)


def build_datasets(
    cfg: Config, data: RunData, cache_dir: Path | None
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training and validation datasets; the training items carry the strategy's per-sample map, if any
    (cached under ``cache_dir``)."""
    sample_map = strategy_for(cfg.loss).sample_map(cfg.loss, cache_dir)
    train = SegmentationDataset(
        data.train_samples,
        data.spec,
        train_transform(cfg.data.image_size),
        length=cfg.data.samples_per_epoch,
        seed=cfg.run.seed,
        sample_map=sample_map,
    )
    val = SegmentationDataset(data.val_samples, data.spec, eval_transform())
    return train, val
