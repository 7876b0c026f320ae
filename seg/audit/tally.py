"""Tallies of a set of masks: counts, value and size checks, objects; partial tallies merge.

``tally_masks`` reads every mask once in worker processes (``seg.data.parallel.map_chunks`` runs
``audit_chunk``, a module-level function so that it pickles) and merges the partial
``AuditTally``s. Decoding, value checks and counting are ``seg.data.counts.measure_mask``, tolerant:
the decoder of training (``seg.data.formats.decode_mask``), listing every problem instead of raising.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from seg.audit.scan import AuditItem, AuditSettings
from seg.data.counts import MaskCounts, measure_mask
from seg.data.formats import Problem, decode_instances
from seg.data.parallel import map_chunks
from seg.data.reading import read_raw
from seg.errors import DataError

FRACTION_EDGES = 10.0 ** np.arange(-6.0, 0.01, 0.25)  # per-image positive fraction: 4 bins a decade, 1e-6..1
LOG2_BINS = 40  # object sizes: bin k holds sizes in [2**k, 2**(k+1)); objects per image: bin 0 = none
_EDGES = FRACTION_EDGES.tolist()


def _log2_bin(values: np.ndarray) -> np.ndarray:
    """floor(log2(v)) for integers v >= 1, clipped to the LOG2_BINS bins."""
    return np.clip(np.frexp(values.astype(np.float64))[1] - 1, 0, LOG2_BINS - 1)


@dataclass
class ObjectTally:
    """Objects per channel: counts, size and per-image histograms (log2 bins), touching instances."""

    names: list[str]
    images: int = 0
    objects: np.ndarray = field(init=False)  # the arrays start at zeros, int64
    size_hist: np.ndarray = field(init=False)
    per_image_hist: np.ndarray = field(init=False)
    max_per_image: np.ndarray = field(init=False)
    max_size: np.ndarray = field(init=False)
    touching: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        k = len(self.names)
        self.objects, self.max_per_image, self.max_size, self.touching = (np.zeros(k, np.int64) for _ in range(4))
        self.size_hist, self.per_image_hist = np.zeros((k, LOG2_BINS), np.int64), np.zeros((k, LOG2_BINS), np.int64)

    def add(self, channel: int, sizes: np.ndarray, touching: bool) -> None:
        n = len(sizes)
        self.objects[channel] += n
        self.size_hist[channel] += np.bincount(_log2_bin(sizes), minlength=LOG2_BINS) if n else 0
        self.per_image_hist[channel, 0 if n == 0 else _log2_bin(np.array([n]))[0] + 1] += 1
        self.max_per_image[channel] = max(self.max_per_image[channel], n)
        self.max_size[channel] = max(self.max_size[channel], int(sizes.max()) if n else 0)
        self.touching[channel] += touching

    def merge(self, other: ObjectTally) -> None:
        for name in ("objects", "size_hist", "per_image_hist", "touching"):
            getattr(self, name).__iadd__(getattr(other, name))
        self.max_per_image = np.maximum(self.max_per_image, other.max_per_image)
        self.max_size = np.maximum(self.max_size, other.max_size)
        self.images += other.images


@dataclass
class AuditTally:
    """Everything counted over a set of masks; partial tallies from workers merge into one."""

    counts: MaskCounts
    fraction_hist: np.ndarray  # (C, 1 + bins): images by their positive fraction; column 0 = empty
    objects: ObjectTally | None = None
    masks_read: int = 0
    images_all_ignored: int = 0
    image_sizes: Counter = field(default_factory=Counter)
    mask_dtypes: Counter = field(default_factory=Counter)
    values: dict = field(default_factory=dict)  # raw value -> [pixels, files]
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def empty(cls, settings: AuditSettings) -> AuditTally:
        spec, source = settings.spec, settings.objects_from
        objects = (
            None
            if source is None
            else ObjectTally([f"not {n}" for n in spec.classes] if source == "negative" else list(spec.classes))
        )
        return cls(MaskCounts(spec.num_classes), np.zeros((spec.num_classes, len(FRACTION_EDGES)), np.int64), objects)

    def merge(self, other: AuditTally) -> None:
        self.counts.merge(other.counts)
        self.fraction_hist += other.fraction_hist
        if self.objects is not None and other.objects is not None:
            self.objects.merge(other.objects)
        self.masks_read += other.masks_read
        self.images_all_ignored += other.images_all_ignored
        self.image_sizes.update(other.image_sizes)
        self.mask_dtypes.update(other.mask_dtypes)
        for value, (pixels, files) in other.values.items():
            mine = self.values.setdefault(value, [0, 0])
            mine[0] += pixels
            mine[1] += files
        self.problems += other.problems


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as cv2.imread would load the image, from its header only; None when unreadable."""
    from PIL import Image  # pillow comes with matplotlib

    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.format in ("JPEG", "MPO", "TIFF") and image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                return height, width  # EXIF orientation: cv2.imread turns the image by 90 degrees
            return width, height
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _object_sizes(target: np.ndarray, connectivity: int) -> np.ndarray:
    _, _, stats, _ = cv2.connectedComponentsWithStats(target.view(np.uint8), connectivity=connectivity)
    return stats[1:, cv2.CC_STAT_AREA]


def _touching(labels: np.ndarray, connectivity: int) -> bool:
    """Whether two different instances share an edge (or a corner, with connectivity 8)."""
    pairs = [(labels[:, 1:], labels[:, :-1]), (labels[1:, :], labels[:-1, :])]
    if connectivity == 8:
        pairs += [(labels[1:, 1:], labels[:-1, :-1]), (labels[1:, :-1], labels[:-1, 1:])]
    return any(bool(np.any((a != b) & (a > 0) & (b > 0))) for a, b in pairs)


def _add_objects(
    tally: AuditTally, objects: ObjectTally, item: AuditItem, planes: list[np.ndarray], settings: AuditSettings
) -> None:
    spec = settings.spec
    if settings.objects_from == "instance":
        if item.instances is None:
            return
        try:
            labels = decode_instances(read_raw(item.instances, palette_indices=True), item.instances)
        except DataError as err:
            tally.problems.append(Problem(str(item.instances), "unreadable", str(err).split(": ", 1)[-1]))
            return
        if labels.shape != planes[0].shape:
            tally.problems.append(
                Problem(
                    str(item.instances),
                    "size_mismatch",
                    f"instance labels {labels.shape[1]}x{labels.shape[0]}, mask "
                    f"{planes[0].shape[1]}x{planes[0].shape[0]}",
                )
            )
            return
        sizes = np.bincount(labels.ravel())[1:]
        objects.add(0, sizes[sizes > 0], _touching(labels, settings.connectivity))
    else:
        if spec.fmt == "index":
            targets = [planes[0] == c for c in range(spec.num_classes)]
        elif spec.fmt == "multilabel":
            targets = [p > 0 for p in planes]
        else:
            targets = [np.isin(planes[0], spec.positive_values or ())]
        for c, target in enumerate(targets):
            objects.add(
                c,
                _object_sizes(~target if settings.objects_from == "negative" else target, settings.connectivity),
                False,
            )
    objects.images += 1


def _add_item(tally: AuditTally, item: AuditItem, settings: AuditSettings) -> None:
    measure = measure_mask(item.masks, settings.spec)
    tally.masks_read += 1
    tally.problems += measure.problems
    if measure.dtype:
        tally.mask_dtypes[measure.dtype] += 1
    if item.image is not None:
        size = _image_size(item.image)
        if size is None:
            tally.problems.append(
                Problem(str(item.image), "unreadable", "cannot read the image (corrupt or not an image)")
            )
        elif measure.shape is not None and size != measure.shape[::-1]:
            tally.problems.append(
                Problem(
                    str(item.image),
                    "size_mismatch",
                    f"image {size[0]}x{size[1]}, mask {measure.shape[1]}x{measure.shape[0]} ({item.masks[0].name})",
                )
            )
    if not measure.counted:
        return
    tally.counts.add_counts(measure.positive, measure.valid, measure.total, measure.all_zero)
    tally.image_sizes[measure.shape] += 1
    for value, pixels in measure.values.items():
        entry = tally.values.setdefault(value, [0, 0])
        entry[0] += pixels
        entry[1] += 1
    if measure.valid == 0:
        tally.images_all_ignored += 1
    else:
        for c, positive in enumerate(measure.positive.tolist()):  # C is small: plain Python is fastest
            column = min(max(bisect_right(_EDGES, positive / measure.valid), 1), len(_EDGES) - 1) if positive else 0
            tally.fraction_hist[c, column] += 1
    if tally.objects is not None:
        _add_objects(tally, tally.objects, item, measure.planes, settings)


def audit_chunk(settings: AuditSettings, items: list[AuditItem]) -> AuditTally:
    """Tally a chunk of masks (runs in a worker process)."""
    tally = AuditTally.empty(settings)
    for item in items:
        _add_item(tally, item, settings)
    return tally


def tally_masks(items: list[AuditItem], settings: AuditSettings, workers: int = 1, progress: bool = True) -> AuditTally:
    """Read every mask once (in ``workers`` processes) and merge the partial tallies."""
    total = AuditTally.empty(settings)
    for part in map_chunks(partial(audit_chunk, settings), items, workers, "audit", progress):
        total.merge(part)
    return total
