"""From a validated config to datasets: find files, split, check, count, wire the strategy's per-sample map.

Everything that can refuse bad input runs here, before a run directory exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.config import Config, expand_path, mask_spec
from seg.config.specs import MaskSpec
from seg.data.counts import MaskCounts, check_positive_values, count_masks
from seg.data.dataset import SegmentationDataset, check_image_sizes
from seg.data.folders import Sample, Splits, find_splits
from seg.data.formats import decode_instances
from seg.data.reading import read_raw
from seg.data.sampling import ForegroundSampler, rarest_first
from seg.data.synthetic import ensure_synthetic
from seg.data.transforms import eval_transform, train_transform
from seg.scoring.structure_scores import StructureSettings
from seg.weighting.registry import strategy_for


@dataclass
class RunData:
    spec: MaskSpec
    train_samples: list[Sample]
    val_samples: list[Sample]
    val_stems: list[str]
    train_counts: MaskCounts
    test_samples: list[Sample]
    test_stems: list[str] | None  # carved by data.test_fraction (recorded in the run's config)
    test_source: str  # where the test split comes from, in words ("" when there is none)


def needs_instance_files(cfg: Config) -> bool:
    """Whether the samples need their ``instances/`` files: for the strategy (border_map from instance
    labels) or for structure metrics of instance objects."""
    metrics = cfg.metrics
    scored = bool(metrics.structure) and metrics.objects_from == "instance"
    return scored or strategy_for(cfg.loss).needs_instances(cfg.loss)


def structure_settings(cfg: Config, samples: list[Sample]) -> StructureSettings | None:
    """What the evaluation of ``samples`` (a dataset's, by index) scores as structure; None when
    ``metrics.structure`` is empty."""
    metrics = cfg.metrics
    if not metrics.structure:
        return None
    reader = None
    if metrics.objects_from == "instance":

        def reader(index: int) -> np.ndarray:
            source = samples[index].instances
            assert source is not None  # needs_instance_files: find_splits paired every image with its labels
            return decode_instances(read_raw(source, palette_indices=True), source)

    return StructureSettings(tuple(metrics.structure), metrics.objects_from, metrics.connectivity, reader)


def data_splits(cfg: Config, need_instances: bool = False) -> Splits:
    """The config's train/val/test splits, repeating the recorded ``val_stems`` and ``test_stems``
    (validation is capped at ``data.max_val_images``)."""
    d = cfg.data
    root = expand_path(d.root)
    if d.synthetic:
        ensure_synthetic(root)
    splits = find_splits(
        root,
        mask_spec(cfg),
        d.val_fraction,
        d.split_seed,
        d.val_stems,
        need_instances,
        d.test_fraction,
        d.test_folder,
        d.test_stems,
    )
    if d.max_val_images:
        return Splits(
            splits.train,
            splits.val[: d.max_val_images],
            splits.test,
            splits.val_stems,
            splits.test_stems,
            splits.test_source,
        )
    return splits


def prepare_data(cfg: Config, progress: bool = True) -> RunData:
    """Find, split and check the data; count the training masks (every value is checked).

    Raises DataError when a configured ``positive_values`` entry occurs in no training mask.
    """
    root = expand_path(cfg.data.root)
    spec = mask_spec(cfg)
    splits = data_splits(cfg, needs_instance_files(cfg))
    train, val = splits.train, splits.val
    check_image_sizes(train + val + splits.test, spec)
    train_counts = count_masks(train, spec, progress=progress)
    check_positive_values(train_counts, spec, root)  # a positive value in no training mask: all-empty targets
    count_masks(val, spec, progress=progress)  # validation masks are checked too, never used for weights
    return RunData(spec, train, val, splits.val_stems, train_counts, splits.test, splits.test_stems, splits.test_source)


def build_datasets(
    cfg: Config, data: RunData, cache_dir: Path | None
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training and validation datasets; the training items carry the strategy's per-sample map, if any
    (cached under ``cache_dir``)."""
    sample_map = strategy_for(cfg.loss).sample_map(cfg.loss, cache_dir)
    d = cfg.data
    foreground = None
    if d.sampling == "foreground":
        order = rarest_first(data.train_counts.positive_pixels)
        foreground = ForegroundSampler(d.foreground_fraction, d.image_size, d.foreground_channel, order)
    train = SegmentationDataset(
        data.train_samples,
        data.spec,
        train_transform(d.image_size),
        length=d.samples_per_epoch,
        seed=cfg.run.seed,
        sample_map=sample_map,
        foreground=foreground,
        keep_decoded=d.keep_decoded,
    )
    val = SegmentationDataset(data.val_samples, data.spec, eval_transform(), keep_decoded=d.keep_decoded)
    return train, val
