"""Streaming mask statistics: the counts that weights and the audit are built on.

One pass over the masks, one image at a time: memory does not grow with the
number of masks. Counts are integers (int64), summed over images; partial counts
from worker processes are merged with :meth:`MaskCounts.merge`.

Counting works on the raw mask values (``seg.data.formats.read_raw``) rather than on
decoded one-hot targets: one histogram of each mask file gives every channel's
positive count, the ignored pixels and the set of values present, which is what
the value checks need (``count_masks`` keeps the set of values seen, so that
:func:`check_positive_values` can refuse a ``positive_values`` entry that no training
mask holds, without a second pass). ``read_raw`` is the decoder of training too: grey+alpha
and palette PNGs read the same here (palette indices for index masks, see
``seg/data/formats.py``). :func:`measure_mask` gives the same counts as
``MaskCounts.add(*load_mask(...))`` and accepts the same values (``allowed_values``
follows the decoders of ``seg/data/formats.py``); instead of raising at the first
bad value it returns every problem found, for the audit (``seg/audit/``).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from tqdm import tqdm

from seg.config import ConfigError
from seg.data.folders import Sample
from seg.data.formats import BINARY_VALUES, DataError, MaskSpec, channels_hint, read_raw

NEGATIVE_DEFINITIONS = ("pixels", "all_zero")  # the same names as seg.weighting.formulas.NEGATIVES


@dataclass
class MaskCounts:
    """Pixel counts over a set of masks with C channels.

    positive_pixels[c]: valid pixels where channel c is positive.
    valid_pixels: pixels that are not ignored (the same for every channel).
    all_zero_pixels: valid pixels where no channel is positive.
    images_with_positives[c]: images with at least one positive pixel in channel c.
    values: the raw mask values seen (filled by count_masks, which reads the raw values;
    empty when counted from decoded targets with ``add``).
    """

    num_channels: int
    positive_pixels: np.ndarray = field(default=None)
    valid_pixels: int = 0
    total_pixels: int = 0
    all_zero_pixels: int = 0
    images: int = 0
    images_with_positives: np.ndarray = field(default=None)
    values: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.positive_pixels is None:
            self.positive_pixels = np.zeros(self.num_channels, dtype=np.int64)
        if self.images_with_positives is None:
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


@dataclass(frozen=True)
class Problem:
    """Something wrong with one file (or folder): what the audit lists."""

    file: str
    kind: str
    detail: str


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
    shape: tuple[int, int] | None = None
    dtype: str = ""
    values: dict[int, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    counted: bool = False
    planes: list[np.ndarray] = field(default_factory=list, repr=False)


@lru_cache(maxsize=64)
def allowed_values(spec: MaskSpec) -> frozenset[int]:
    """Raw values a mask file (or multilabel channel) may hold, as in seg/data/formats.py's decoders."""
    if spec.fmt == "index":
        return frozenset(range(spec.num_classes)) | ({spec.ignore_index} if spec.ignore_index is not None else set())
    if spec.fmt == "multilabel":
        return frozenset(BINARY_VALUES)
    return frozenset(BINARY_VALUES) | frozenset(spec.positive_values or ())


def value_counts(plane: np.ndarray, two_valued_first: bool = True) -> dict[int, int]:
    """Exact pixel count of every value in a 2-D mask: {value: pixels}.

    A mask holding 0 and one other value (the common binary case) is settled with two
    vectorised counts (~0.1 ms at 512x512); anything else takes one histogram of the
    8- or 16-bit values (``cv2.calcHist``, 3x faster than ``np.bincount`` here; its
    float32 counts are exact below 2**24 pixels, above that ``np.bincount`` is used).
    """
    size = plane.size
    if plane.dtype in (np.uint8, np.uint16):
        if two_valued_first:
            nonzero = cv2.countNonZero(plane)
            if nonzero == 0:
                return {0: size}
            top = int(plane.max())
            if np.count_nonzero(plane == top) == nonzero:
                return {top: size} if nonzero == size else {0: size - nonzero, top: nonzero}
        bins = 256 if plane.dtype == np.uint8 else 65536
        if size < 1 << 24:
            counts = cv2.calcHist([plane], [0], None, [bins], [0, bins]).ravel().astype(np.int64)
        else:
            counts = np.bincount(plane.ravel(), minlength=bins)
        present = np.flatnonzero(counts)
        return dict(zip(present.tolist(), counts[present].tolist(), strict=False))
    values, counts = np.unique(plane, return_counts=True)
    return {v.item(): int(n) for v, n in zip(values, counts, strict=False)}


@lru_cache(maxsize=64)
def _dtype_name_cached(dtype: np.dtype, channels: int) -> str:
    return dtype.name + (f" ({channels} channels)" if channels > 1 else "")


def _dtype_name(raw: np.ndarray) -> str:
    """``uint8``, ``uint16 (3 channels)``: how a mask file is stored."""
    return _dtype_name_cached(raw.dtype, raw.shape[2] if raw.ndim == 3 else 1)


def _describe(spec: MaskSpec) -> str:
    if spec.fmt == "index":
        return f"an index mask with {spec.num_classes} classes" + (
            f" and ignore_index {spec.ignore_index}" if spec.ignore_index is not None else ""
        )
    return "a multilabel channel" if spec.fmt == "multilabel" else f"a {spec.fmt} mask"


def _value_problem(
    values: dict[int, int], allowed: frozenset[int], spec: MaskSpec, path: Path, where: str = ""
) -> Problem | None:
    bad = sorted(v for v in values if v not in allowed)
    if not bad:
        return None
    pixels = sum(values[v] for v in bad)
    shown = ", ".join(str(v) for v in bad[:6]) + (" ..." if len(bad) > 6 else "")
    hint = (
        "likely resized with interpolation: use nearest-neighbour"
        if spec.fmt != "index"
        else "check data.classes / ignore_index, or a resize with interpolation"
    )
    return Problem(
        str(path),
        "unexpected_values",
        f"{where}value(s) {shown} not valid for {_describe(spec)} (allowed: {sorted(allowed)}); "
        f"{pixels} of {sum(values.values())} pixels; {hint}",
    )


def _single_plane(raw: np.ndarray, path: Path, problems: list[Problem]) -> np.ndarray | None:
    """The 2-D plane of a mask that must be single-channel; an RGB copy of one plane is accepted with a problem."""
    if raw.ndim == 2:
        return raw
    same = all(np.array_equal(raw[..., 0], raw[..., k]) for k in range(1, raw.shape[2]))
    problems.append(
        Problem(
            str(path),
            "rgb_mask",
            f"single-channel mask stored with {raw.shape[2]} channels "
            + ("(all equal: counted from the first); " if same else "(channels differ: not counted); ")
            + channels_hint(path, raw.shape[2]),
        )
    )
    return np.ascontiguousarray(raw[..., 0]) if same else None


def _planes(
    raws: list[np.ndarray], paths: Sequence[Path], spec: MaskSpec, problems: list[Problem]
) -> tuple[list[np.ndarray], list[Path]] | None:
    """One 2-D plane per mask channel (binary/index: the mask itself), or None if it cannot be counted."""
    if spec.fmt == "multilabel" and len(raws) == 1 and spec.num_classes > 1:
        raw, path = raws[0], paths[0]
        if raw.ndim != 3 or raw.shape[2] < spec.num_classes:
            got = 1 if raw.ndim == 2 else raw.shape[2]
            problems.append(
                Problem(
                    str(path),
                    "too_few_channels",
                    f"multilabel mask has {got} channel(s); data.classes lists {spec.num_classes}",
                )
            )
            return None
        return list(cv2.split(raw)[: spec.num_classes]), [path] * spec.num_classes
    planes = [_single_plane(raw, path, problems) for raw, path in zip(raws, paths, strict=False)]
    if any(p is None for p in planes):
        return None
    if len({p.shape for p in planes}) > 1:
        problems.append(
            Problem(
                str(paths[0]),
                "size_mismatch",
                "the channel masks of this image differ in size: "
                + ", ".join(f"{p.name} {q.shape[1]}x{q.shape[0]}" for p, q in zip(paths, planes, strict=False)),
            )
        )
        return None
    return planes, list(paths)


def measure_mask(mask_paths: Sequence[Path], spec: MaskSpec) -> MaskMeasure:
    """Read the file(s) of one mask; count positives per channel and check every value."""
    measure = MaskMeasure(np.zeros(spec.num_classes, dtype=np.int64))
    raws = []
    for path in mask_paths:
        try:
            raws.append(read_raw(path, palette_indices=spec.fmt == "index"))
        except DataError:
            measure.problems.append(Problem(str(path), "unreadable", "cannot read the mask (corrupt or not an image)"))
            return measure
    measure.dtype = _dtype_name(raws[0])
    found = _planes(raws, mask_paths, spec, measure.problems)
    if found is None:
        return measure
    planes, paths = found
    allowed = allowed_values(spec)
    per_plane = [value_counts(p, two_valued_first=spec.fmt != "index") for p in planes]
    one_file = len(set(paths)) < len(paths)  # a multi-channel multilabel file: name the channel
    for name, values, path in zip(spec.classes, per_plane, paths, strict=False):
        problem = _value_problem(values, allowed, spec, path, f"channel '{name}': " if one_file else "")
        if problem is not None:
            measure.problems.append(problem)
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


# ------------------------------------------------------------------ many masks, in parallel

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Worker processes to use by default: the CPUs this process may run on, at most 8."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(8, os.cpu_count() or 1))


def _quiet_cv2() -> None:
    cv2.setNumThreads(1)  # images are small: threads cost more than they give; parallelism is across processes
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # unreadable files are reported, not logged


@contextmanager
def _cv2_for_masks() -> Iterator[None]:
    threads, level = cv2.getNumThreads(), cv2.utils.logging.getLogLevel()
    _quiet_cv2()
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        cv2.utils.logging.setLogLevel(level)


def map_chunks(
    fn: Callable[[list[T]], R],
    items: Sequence[T],
    workers: int = 1,
    desc: str = "masks",
    progress: bool = True,
    chunk_size: int | None = None,
) -> Iterator[R]:
    """Yield ``fn(chunk)`` for consecutive chunks of ``items``, in order.

    With ``workers > 1`` the chunks run in a process pool (``imap``): only the small
    partial results travel back, so memory stays flat. ``fn`` must be picklable (a
    module-level function or a ``functools.partial`` of one). A tqdm bar counts items.
    """
    workers = max(1, min(workers, len(items)))
    if chunk_size is None:
        chunk_size = max(1, min(32, len(items) // (4 * workers) or 1))
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    # fork (Linux) starts workers in milliseconds; elsewhere spawn. The pool is made before the bar's thread.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with (
        context.Pool(workers, initializer=_quiet_cv2) if workers > 1 else nullcontext() as pool,
        _cv2_for_masks(),
        tqdm(total=len(items), desc=desc, unit="mask", disable=not progress, leave=False, dynamic_ncols=True) as bar,
    ):
        for chunk, result in zip(chunks, pool.imap(fn, chunks) if pool is not None else map(fn, chunks), strict=False):
            yield result
            bar.update(len(chunk))


def _count_chunk(spec: MaskSpec, samples: list[Sample]) -> MaskCounts:
    counts = MaskCounts(spec.num_classes)
    for sample in samples:
        measure = measure_mask(sample.masks, spec)
        if measure.problems:  # the same refusals as seg.data.formats.load_mask
            problem = measure.problems[0]
            raise DataError(f"{problem.file}: {problem.detail}")
        counts.add_counts(measure.positive, measure.valid, measure.total, measure.all_zero)
        counts.values.update(measure.values)  # the histogram measure_mask made anyway: no extra pass
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


def positive_values_message(spec: MaskSpec, values, where: str) -> str | None:
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


def read_mask_stats(path: str | Path, classes: Sequence[str] | None = None) -> dict:
    """Read the counts that training needs from an audit's ``mask_stats.json``.

    Returns ``{"classes": [names], "positive": int64 (C,), "negative": {"pixels": int64 (C,),
    "all_zero": int64 (C,)}, "valid_pixels": int, "all_zero_pixels": int, "images": int,
    "split": str, "mask_format": str, "sha256": hex digest of the file}``. Raises ConfigError
    naming the file when it cannot be read, lacks these fields, counts validation masks
    (weights come from the training split only), or its classes differ from ``classes``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        stats = json.loads(data)
        channels = stats["channels"]
        names = [str(c["name"]) for c in channels]
        positive = np.array([int(c["positive_pixels"]) for c in channels], dtype=np.int64)
        negative = {
            d: np.array([int(c["negative_pixels"][d]) for c in channels], dtype=np.int64) for d in NEGATIVE_DEFINITIONS
        }
        result = {
            "classes": names,
            "positive": positive,
            "negative": negative,
            "valid_pixels": int(stats["pixels"]["valid"]),
            "all_zero_pixels": int(stats["pixels"]["all_zero"]),
            "images": int(stats["images"]),
            "split": str(stats["split"]),
            "mask_format": str(stats["format"]["mask_format"]),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot read the mask statistics file ({err.strerror or err}); "
            "run scripts/audit_masks.py to write it"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"{path}: not a mask_stats.json written by scripts/audit_masks.py ({type(err).__name__}: {err})"
        ) from None
    if result["split"] == "val" or (result["split"] == "all" and "config" in (stats.get("source") or {})):
        raise ConfigError(
            f"{path}: counts the {result['split']} split, validation masks included; weights come "
            "from the training split only: re-run scripts/audit_masks.py with --split train"
        )
    if classes is not None and list(classes) != names:
        raise ConfigError(
            f"{path}: its classes {names} differ from data.classes {list(classes)}; "
            "re-run scripts/audit_masks.py with this config"
        )
    return result
