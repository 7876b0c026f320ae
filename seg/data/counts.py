"""Mask counts, the one count type weights and the audit are built on: per mask, over a split, from mask_stats.json.

One pass over the masks, one image at a time: memory does not grow with the number of
masks. Counts are integers (int64), summed over images; partial counts from worker
processes are merged with :meth:`MaskCounts.merge`. :func:`measure_mask` counts one mask
from the value histograms that ``seg.data.formats.decode_mask`` makes while checking it
(the decoder of training too), without a one-hot target: its counts equal
``MaskCounts.add(*load_mask(...))``. ``count_masks`` keeps the set of values seen, so that
:func:`check_positive_values` can refuse a ``positive_values`` entry that no training mask
holds without a second pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from seg.config import ConfigError
from seg.config.specs import MaskSpec
from seg.data.folders import Sample
from seg.data.formats import Faults, Problem, decode_mask
from seg.data.parallel import map_chunks
from seg.errors import DataError

NEGATIVES = ("pixels", "all_zero")  # what a channel's negatives are: pixels where it is 0 | where no channel is 1


def _no_counts() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class MaskCounts:
    """Pixel counts over a set of masks with C channels.

    positive_pixels[c]: valid pixels where channel c is positive.
    valid_pixels: pixels that are not ignored (the same for every channel).
    all_zero_pixels: valid pixels where no channel is positive.
    images_with_positives[c]: images with at least one positive pixel in channel c.
    values: the raw mask values seen (filled by count_masks, which reads the raw values;
    empty when counted from decoded targets with ``add`` or read from mask_stats.json).
    The per-channel arrays start at zeros (int64) when not given.
    """

    num_channels: int
    positive_pixels: np.ndarray = field(default_factory=_no_counts)
    valid_pixels: int = 0
    total_pixels: int = 0
    all_zero_pixels: int = 0
    images: int = 0
    images_with_positives: np.ndarray = field(default_factory=_no_counts)
    values: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.positive_pixels.size:
            self.positive_pixels = np.zeros(self.num_channels, dtype=np.int64)
        if not self.images_with_positives.size:
            self.images_with_positives = np.zeros(self.num_channels, dtype=np.int64)

    def add(self, target: np.ndarray, valid: np.ndarray) -> None:
        """Add one image: target uint8 [H,W,C] in {0,1}, valid bool [H,W]."""
        positive = target.reshape(-1, self.num_channels)[valid.ravel()]
        n_valid = int(valid.sum())
        self.add_counts(
            positive.sum(axis=0, dtype=np.int64),
            n_valid,
            valid.size,
            n_valid - int(np.count_nonzero(positive.any(axis=1))),
        )

    def add_counts(self, positive: np.ndarray, valid: int, total: int, all_zero: int) -> None:
        """Add one image from its counts: positive (C,) int64, valid, total and all-zero pixels."""
        self.positive_pixels += positive
        self.images_with_positives += positive > 0
        self.valid_pixels += valid
        self.total_pixels += total
        self.all_zero_pixels += all_zero
        self.images += 1

    def merge(self, other: MaskCounts) -> None:
        self.positive_pixels += other.positive_pixels
        self.images_with_positives += other.images_with_positives
        self.valid_pixels += other.valid_pixels
        self.total_pixels += other.total_pixels
        self.all_zero_pixels += other.all_zero_pixels
        self.images += other.images
        self.values |= other.values

    @property
    def negative_pixels(self) -> np.ndarray:
        """Per channel, valid pixels where the channel is 0 (the ``pixels`` definition)."""
        return self.valid_pixels - self.positive_pixels


# ------------------------------------------------------------------ one mask


@dataclass
class MaskMeasure:
    """What the file(s) of one mask hold.

    ``counted`` is False when the mask cannot be counted (unreadable, channels missing
    or of different sizes); the counts are then zero. ``values`` maps each raw value to
    its pixel count, summed over the mask's files. ``planes`` are the raw 2-D arrays
    (one per file, or per channel of a multi-channel file) for object statistics.
    """

    positive: np.ndarray
    valid: int = 0
    total: int = 0
    all_zero: int = 0
    shape: tuple[int, ...] | None = None
    dtype: str = ""
    values: dict[int, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    counted: bool = False
    planes: list[np.ndarray] = field(default_factory=list, repr=False)


def measure_mask(mask_paths: Sequence[Path], spec: MaskSpec, strict: bool = False) -> MaskMeasure:
    """Decode the file(s) of one mask (``decode_mask``) and count positives per channel from the value histograms.

    Tolerant by default (the audit): every problem is listed in ``problems`` and the mask is counted
    as far as it can be read; ``strict`` raises DataError naming the file at the first, as training does.
    """
    faults = Faults(strict)
    decoded = decode_mask(mask_paths, spec, faults)
    measure = MaskMeasure(np.zeros(spec.num_classes, dtype=np.int64), dtype=decoded.dtype, problems=faults.problems)
    planes, per_plane = decoded.planes, decoded.values
    if not planes:
        return measure
    for values in per_plane:
        for v, n in values.items():
            measure.values[v] = measure.values.get(v, 0) + n
    size = planes[0].size
    measure.shape, measure.total, measure.valid, measure.planes = planes[0].shape, size, size, planes
    if spec.fmt == "index":
        values = per_plane[0]
        measure.positive[:] = [values.get(c, 0) for c in range(spec.num_classes)]
        if spec.ignore_index is not None:
            measure.valid -= values.get(spec.ignore_index, 0)
            if spec.ignore_index < spec.num_classes:
                measure.positive[spec.ignore_index] = 0
        measure.all_zero = measure.valid - int(measure.positive.sum())
    elif spec.fmt == "multilabel":
        measure.positive[:] = [size - values.get(0, 0) for values in per_plane]
        if len(planes) == 1:
            measure.all_zero = size - int(measure.positive[0])
        else:
            union = planes[0]
            for plane in planes[1:]:
                union = cv2.bitwise_or(union, plane)
            measure.all_zero = size - cv2.countNonZero(union)
    else:  # binary, instance: the binary mask
        measure.positive[0] = sum(per_plane[0].get(v, 0) for v in spec.positive_values or ())
        measure.all_zero = size - int(measure.positive[0])
    measure.counted = True
    return measure


# ------------------------------------------------------------------ many masks


def _count_chunk(spec: MaskSpec, samples: list[Sample]) -> MaskCounts:
    counts = MaskCounts(spec.num_classes)
    for sample in samples:
        measure = measure_mask(sample.masks, spec, strict=True)  # the same refusals as load_mask
        counts.add_counts(measure.positive, measure.valid, measure.total, measure.all_zero)
        counts.values.update(measure.values)  # the histogram the value checks made anyway: no extra pass
    return counts


def count_masks(samples: list[Sample], spec: MaskSpec, progress: bool = True, workers: int = 1) -> MaskCounts:
    """Count the masks of ``samples`` in one streaming pass (``workers`` processes).

    Raises DataError, naming the file, on a mask that training would refuse. ``values`` of
    the result holds every raw value seen (for :func:`check_positive_values`).
    """
    counts = MaskCounts(spec.num_classes)
    for part in map_chunks(partial(_count_chunk, spec), samples, workers, "mask statistics", progress):
        counts.merge(part)
    return counts


def absent_positive_values(spec: MaskSpec, values: set[int] | dict[int, object]) -> list[int]:
    """The configured ``positive_values`` (binary, instance masks) missing from ``values``, the raw values seen."""
    if spec.fmt not in ("binary", "instance") or not spec.positive_values:
        return []
    return sorted(v for v in set(spec.positive_values) if v not in values)


def positive_values_message(spec: MaskSpec, values: set[int] | dict[int, object], where: str) -> str | None:
    """``data.positive_values: 7 occurs in no <where> (values found: 0, 255); ...``, or None when all occur."""
    absent = absent_positive_values(spec, values)
    if not absent:
        return None
    found = sorted(values)
    shown = ", ".join(str(v) for v in found[:10]) + (" ..." if len(found) > 10 else "")
    return (
        f"data.positive_values: {', '.join(str(v) for v in absent)} "
        f"{'occurs' if len(absent) == 1 else 'occur'} in no {where} (values found: {shown or 'none'}); "
        "list the value(s) of the positive class that the masks hold (0/255 masks: [255], ISBI membrane: [0])"
    )


def check_positive_values(counts: MaskCounts, spec: MaskSpec, root: Path) -> None:
    """Refuse a configured positive value that occurs in none of the masks counted (training would
    silently learn all-empty targets for it). ``counts`` from :func:`count_masks` of the training split."""
    message = positive_values_message(spec, counts.values, f"training mask of {root}")
    if message is not None:
        raise DataError(message)


# ------------------------------------------------------------------ mask_stats.json, for training


@dataclass(frozen=True)
class MaskStatsFile:
    """What an audit's ``mask_stats.json`` holds for training: the counts, and what they are of.

    ``negative`` maps each of :data:`NEGATIVES` to the file's per-channel negative counts, int64 (C,).
    """

    counts: MaskCounts
    classes: list[str]
    negative: dict[str, np.ndarray]
    split: str
    mask_format: str
    sha256: str  # of the file's bytes


def read_mask_stats(path: str | Path, classes: Sequence[str] | None = None) -> MaskStatsFile:
    """Read the counts that training needs from an audit's ``mask_stats.json``.

    Raises ConfigError naming the file when it cannot be read, lacks these fields, counts
    validation masks (weights come from the training split only), or its classes differ from ``classes``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        stats = json.loads(data)
        channels = stats["channels"]
        names = [str(c["name"]) for c in channels]
        pixels = stats["pixels"]
        counts = MaskCounts(
            len(channels),
            positive_pixels=np.array([int(c["positive_pixels"]) for c in channels], dtype=np.int64),
            valid_pixels=int(pixels["valid"]),
            total_pixels=int(pixels["total"]),
            all_zero_pixels=int(pixels["all_zero"]),
            images=int(stats["images"]),
            images_with_positives=np.array([int(c["images_with_positives"]) for c in channels], dtype=np.int64),
        )
        negative = {d: np.array([int(c["negative_pixels"][d]) for c in channels], dtype=np.int64) for d in NEGATIVES}
        result = MaskStatsFile(
            counts,
            names,
            negative,
            str(stats["split"]),
            str(stats["format"]["mask_format"]),
            hashlib.sha256(data).hexdigest(),
        )
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot read the mask statistics file ({err.strerror or err}); "
            "run scripts/audit_masks.py to write it"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"{path}: not a mask_stats.json written by scripts/audit_masks.py ({type(err).__name__}: {err})"
        ) from None
    if result.split == "val" or (result.split == "all" and "config" in (stats.get("source") or {})):
        raise ConfigError(
            f"{path}: counts the {result.split} split, validation masks included; weights come "
            "from the training split only: re-run scripts/audit_masks.py with --split train"
        )
    if classes is not None and list(classes) != names:
        raise ConfigError(
            f"{path}: its classes {names} differ from data.classes {list(classes)}; "
            "re-run scripts/audit_masks.py with this config"
        )
    return result
