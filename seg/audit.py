"""Mask audit: what is in the masks, what is wrong with them, which pos_weight to use.

``plan_from_config`` / ``plan_from_masks`` find the masks (a tolerant scan that lists
every problem instead of stopping at the first) and pick the split; ``run_audit``
reads every mask once in worker processes (``seg.stats.map_chunks``), merges the
partial tallies and writes ``mask_stats.json``, ``report.md`` and plots into the output
folder, atomically. Counting and value checks are ``seg.stats.measure_mask``; the
recommended weights come from ``seg.weights``. Layout of the output: CONTRACT.md.
"""

from __future__ import annotations

import json
import os
import random
from bisect import bisect_right
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from seg.config import BASE_CONFIG, Config, ConfigError, expand_path, read_yaml
from seg.data.folders import IMAGE_SUFFIXES, split_samples
from seg.data.masks import DataError, MaskSpec, decode_instances, read_raw
from seg.stats import (NEGATIVE_DEFINITIONS, MaskCounts, Problem, default_workers, map_chunks, measure_mask,
                       read_mask_stats)

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "all")
OBJECT_SOURCES = ("instance", "positive", "negative")
FRACTION_EDGES = 10.0 ** np.arange(-6.0, 0.01, 0.25)  # per-image positive fraction: 4 bins a decade, 1e-6..1
LOG2_BINS = 40  # object sizes: bin k holds sizes in [2**k, 2**(k+1)); objects per image: bin 0 = none
MAX_REPORT_PROBLEMS = 200
_EDGES = FRACTION_EDGES.tolist()


@dataclass(frozen=True)
class AuditItem:
    """One mask (its file per channel) with its image and instance labels, when found."""

    stem: str
    masks: tuple[Path, ...]
    image: Path | None = None
    instances: Path | None = None


@dataclass(frozen=True)
class AuditSettings:
    spec: MaskSpec
    objects_from: str | None = None  # None: no object statistics; else one of OBJECT_SOURCES
    connectivity: int = 4


@dataclass
class AuditPlan:
    """Everything ``run_audit`` needs: the masks to read and how to report them."""

    items: list[AuditItem]
    problems: list[Problem]
    settings: AuditSettings
    clamp: tuple[float, float]
    split: str
    dataset: str
    source: dict
    out_dir: Path
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ finding the files, tolerantly


def _files_by_stem(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in files:
                problems.append(Problem(str(path), "duplicate_stem",
                                        f"same stem as {files[path.stem].name}; only that file is audited"))
            else:
                files[path.stem] = path
    return files


def _mask_files(mask_dir: Path, spec: MaskSpec, problems: list[Problem]) -> tuple[dict, set[str]]:
    """Stem -> mask file(s), and the stems left out because a channel file is missing."""
    channel_dirs = [mask_dir / name for name in spec.classes]
    if not (spec.fmt == "multilabel" and spec.num_classes > 1 and any(d.is_dir() for d in channel_dirs)):
        return {stem: (path,) for stem, path in _files_by_stem(mask_dir, problems).items()}, set()
    for folder in channel_dirs:
        if not folder.is_dir():
            raise DataError(f"{folder}: channel folder missing (masks/<channel>/ is needed for every data.classes name)")
    per_channel = [_files_by_stem(d, problems) for d in channel_dirs]
    stems = set().union(*per_channel)
    incomplete = set()
    for folder, files in zip(channel_dirs, per_channel):
        for stem in sorted(stems - set(files)):
            problems.append(Problem(str(folder / f"{stem}.png"), "missing_channel",
                                    f"no mask for '{stem}' in channel '{folder.name}': this image is not counted"))
            incomplete.add(stem)
    return {s: tuple(files[s] for files in per_channel) for s in sorted(stems - incomplete)}, incomplete


def scan_folder(mask_dir: Path, image_dir: Path, spec: MaskSpec, instance_dir: Path | None = None
                ) -> tuple[list[AuditItem], list[Problem]]:
    """Pair masks with images (and instance labels) by stem, listing every unmatched file as a problem."""
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: masks folder not found")
    problems: list[Problem] = []
    masks, incomplete = _mask_files(mask_dir, spec, problems)
    images = _files_by_stem(image_dir, problems) if image_dir.is_dir() else None
    if images is None:
        problems.append(Problem(str(image_dir), "missing_images",
                                "no images folder beside the masks: pairing and image sizes are not checked"))
    else:
        for stem in sorted(set(images) - set(masks) - incomplete):
            problems.append(Problem(str(images[stem]), "image_without_mask", f"no mask {mask_dir}/{stem}.*"))
        for stem in sorted(set(masks) - set(images)):
            problems.append(Problem(str(masks[stem][0]), "mask_without_image", f"no image {image_dir}/{stem}.*"))
    instances = None
    if instance_dir is not None:
        if instance_dir.is_dir():
            instances = _files_by_stem(instance_dir, problems)
            for stem in sorted(set(masks) - set(instances)):
                problems.append(Problem(str(masks[stem][0]), "missing_instances",
                                        f"no instance labels {instance_dir}/{stem}.*"))
        else:
            problems.append(Problem(str(instance_dir), "missing_instances", "no instances folder beside the masks"))
    items = [AuditItem(stem, masks[stem], images.get(stem) if images else None,
                       instances.get(stem) if instances else None) for stem in sorted(masks)]
    if not items:
        raise DataError(f"{mask_dir}: no masks found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items, problems


def seeded_val_stems(stems: list[str], val_fraction: float, split_seed: int) -> list[str]:
    """The validation stems that seg.data.folders.split_samples picks (used where it refuses a folder)."""
    stems = sorted(stems)
    random.Random(split_seed).shuffle(stems)
    return sorted(stems[:min(len(stems) - 1, max(1, round(val_fraction * len(stems))))])


def _pick(items: list[AuditItem], val_stems: list[str], split: str) -> list[AuditItem]:
    chosen = set(val_stems)
    return [i for i in items if (i.stem in chosen) == (split == "val")] if split != "all" else items


def dataset_name(folder: Path) -> str:
    """``.../camvid/train/masks`` -> ``camvid``: the first folder up that is not a split or masks folder."""
    for part in reversed(folder.resolve().parts):
        if part not in ("masks", "train", "val", "test", "labels", "annotations"):
            return part
    return "masks"


def _objects_from(fmt: str, objects: bool | None, objects_from: str | None, default: str) -> str | None:
    if objects is False or (objects is None and fmt != "instance" and objects_from is None):
        return None
    source = objects_from or ("instance" if fmt == "instance" else default)
    if source == "instance" and fmt != "instance":
        raise ConfigError(f"--objects-from instance needs mask format instance (got {fmt}); use positive or negative")
    return source


def plan_from_config(cfg: Config, config_path: str, split: str = "train", out: str | None = None,
                     objects: bool | None = None, objects_from: str | None = None) -> AuditPlan:
    """Audit the data of a training config: its training split by default, split as training splits it."""
    d = cfg.data
    spec = MaskSpec(d.mask_format, tuple(d.classes), tuple(d.positive_values) if d.positive_values else None,
                    d.ignore_index)
    root = expand_path(d.root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (data.root in {config_path}"
                        + ("; the synthetic set is generated by the first training run)" if d.synthetic else ")"))
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = root / "val" if (root / "val" / "images").is_dir() and (root / "val" / "masks").is_dir() else None
    inst = (lambda folder: folder / "instances") if spec.fmt == "instance" else (lambda folder: None)
    items, problems, notes = [], [], []
    if val_dir is None or split != "val":
        found, problems = scan_folder(train_dir / "masks", train_dir / "images", spec, inst(train_dir))
        if val_dir is None and split != "all":
            try:
                val_stems = split_samples(root, spec, d.val_fraction, d.split_seed, d.val_stems)[2]
            except DataError:
                val_stems = d.val_stems or seeded_val_stems([i.stem for i in found], d.val_fraction, d.split_seed)
                notes.append("Training would refuse this folder as it is (see problems); the split shown applies "
                             "the same seeded rule to the masks found.")
            found = _pick(found, val_stems, split)
        items += found
    if val_dir is not None and split in ("val", "all"):
        found, more = scan_folder(val_dir / "masks", val_dir / "images", spec, inst(val_dir))
        items, problems = items + found, problems + more
    if not items:
        raise DataError(f"{root}: no masks in the {split} split")
    border = cfg.loss.border
    default_from = border.instances_from if spec.fmt == "binary" and border.instances_from != "instance" else "positive"
    return AuditPlan(items, problems,
                     AuditSettings(spec, _objects_from(spec.fmt, objects, objects_from, default_from),
                                   border.connectivity),
                     tuple(cfg.loss.clamp), split, root.name, {"config": str(config_path), "root": str(root)},
                     Path(out) if out else expand_path(cfg.run.out_dir) / f"audit-{root.name}", notes)


def plan_from_masks(mask_dir: Path, spec: MaskSpec, split: str = "all", out: str | None = None,
                    objects: bool | None = None, objects_from: str | None = None, connectivity: int = 4,
                    clamp: tuple[float, float] | None = None) -> AuditPlan:
    """Audit one folder of masks; images are looked for in a sibling ``images/``."""
    mask_dir = Path(mask_dir)
    items, problems = scan_folder(mask_dir, mask_dir.parent / "images", spec,
                                  mask_dir.parent / "instances" if spec.fmt == "instance" else None)
    defaults = read_yaml(BASE_CONFIG)
    if split != "all":
        data = defaults["data"]
        items = _pick(items, seeded_val_stems([i.stem for i in items], data["val_fraction"], data["split_seed"]),
                      split)
        if not items:
            raise DataError(f"{mask_dir}: no masks in the {split} split ({len(problems)} problem(s) while scanning)")
    name = dataset_name(mask_dir.parent)
    clamp = clamp or tuple(float(v) for v in defaults["loss"]["clamp"])
    return AuditPlan(items, problems,
                     AuditSettings(spec, _objects_from(spec.fmt, objects, objects_from, "positive"), connectivity),
                     clamp, split, name, {"masks": str(mask_dir.resolve())},
                     Path(out) if out else expand_path(defaults["run"]["out_dir"]) / f"audit-{name}")


# ------------------------------------------------------------------ tallies (merged across workers)


def _log2_bin(values: np.ndarray) -> np.ndarray:
    """floor(log2(v)) for integers v >= 1, clipped to the LOG2_BINS bins."""
    return np.clip(np.frexp(values.astype(np.float64))[1] - 1, 0, LOG2_BINS - 1)


@dataclass
class ObjectTally:
    """Objects per channel: counts, size and per-image histograms (log2 bins), touching instances."""

    names: list[str]
    objects: np.ndarray = None
    images: int = 0
    size_hist: np.ndarray = None
    per_image_hist: np.ndarray = None
    max_per_image: np.ndarray = None
    max_size: np.ndarray = None
    touching: np.ndarray = None

    def __post_init__(self) -> None:
        k = len(self.names)
        for name, shape in (("objects", k), ("size_hist", (k, LOG2_BINS)), ("per_image_hist", (k, LOG2_BINS)),
                            ("max_per_image", k), ("max_size", k), ("touching", k)):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape, dtype=np.int64))

    def add(self, channel: int, sizes: np.ndarray, touching: bool) -> None:
        n = len(sizes)
        self.objects[channel] += n
        self.size_hist[channel] += np.bincount(_log2_bin(sizes), minlength=LOG2_BINS) if n else 0
        self.per_image_hist[channel, 0 if n == 0 else _log2_bin(np.array([n]))[0] + 1] += 1
        self.max_per_image[channel] = max(self.max_per_image[channel], n)
        self.max_size[channel] = max(self.max_size[channel], int(sizes.max()) if n else 0)
        self.touching[channel] += touching

    def merge(self, other: "ObjectTally") -> None:
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
    def empty(cls, settings: AuditSettings) -> "AuditTally":
        spec, source = settings.spec, settings.objects_from
        objects = None if source is None else ObjectTally(
            [f"not {n}" for n in spec.classes] if source == "negative" else list(spec.classes))
        return cls(MaskCounts(spec.num_classes), np.zeros((spec.num_classes, len(FRACTION_EDGES)), np.int64), objects)

    def merge(self, other: "AuditTally") -> None:
        self.counts.merge(other.counts)
        self.fraction_hist += other.fraction_hist
        if self.objects is not None:
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


def _add_objects(tally: AuditTally, item: AuditItem, planes: list[np.ndarray], settings: AuditSettings) -> None:
    spec, objects = settings.spec, tally.objects
    if settings.objects_from == "instance":
        if item.instances is None:
            return
        try:
            labels = decode_instances(read_raw(item.instances), item.instances)
        except DataError as err:
            tally.problems.append(Problem(str(item.instances), "unreadable", str(err).split(": ", 1)[-1]))
            return
        if labels.shape != planes[0].shape:
            tally.problems.append(Problem(str(item.instances), "size_mismatch",
                                          f"instance labels {labels.shape[1]}x{labels.shape[0]}, mask "
                                          f"{planes[0].shape[1]}x{planes[0].shape[0]}"))
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
            objects.add(c, _object_sizes(~target if settings.objects_from == "negative" else target,
                                         settings.connectivity), False)
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
            tally.problems.append(Problem(str(item.image), "unreadable", "cannot read the image (corrupt or not an image)"))
        elif measure.shape is not None and size != measure.shape[::-1]:
            tally.problems.append(Problem(str(item.image), "size_mismatch",
                                          f"image {size[0]}x{size[1]}, mask {measure.shape[1]}x{measure.shape[0]} "
                                          f"({item.masks[0].name})"))
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
        _add_objects(tally, item, measure.planes, settings)


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


# ------------------------------------------------------------------ mask_stats.json


def _sig(value: float) -> float:
    return float(f"{value:.6g}")


def recommended_pos_weights(counts: MaskCounts, clamp: tuple[float, float]) -> dict:
    """pos_weight per channel and global, under both negative definitions, from seg.weights.

    Returns {definition: {"negative": int64 (C,), "per_channel": [C floats], "global": float,
    "unclamped": [C floats or None]}}.
    """
    import torch

    from seg.weights import NEGATIVES, global_pos_weight, negative_counts, per_channel_pos_weight

    positive = torch.from_numpy(counts.positive_pixels)
    valid, all_zero = torch.tensor(counts.valid_pixels), torch.tensor(counts.all_zero_pixels)
    out = {}
    for definition in NEGATIVES:
        negative = negative_counts(positive, valid, all_zero, definition)
        out[definition] = {
            "negative": negative.numpy().astype(np.int64),
            "per_channel": [_sig(w) for w in per_channel_pos_weight(positive, negative, clamp).flatten().tolist()],
            "global": _sig(float(global_pos_weight(positive, negative, clamp))),
            "unclamped": [_sig(n / p) if p else None for n, p in zip(negative.tolist(), positive.tolist())],
        }
    return out


def _fraction(part: int, whole: int) -> float | None:
    return _sig(part / whole) if whole else None


def _histogram(counts: np.ndarray) -> dict:
    """Log2 bins without the trailing empty ones: bin k holds [2**k, 2**(k+1))."""
    last = int(np.flatnonzero(counts).max()) + 1 if counts.any() else 0
    return {"bin_lower_edges": [2**k for k in range(last)], "counts": counts[:last].tolist()}


def _objects_json(objects: ObjectTally, settings: AuditSettings) -> dict:
    channels = []
    for c, name in enumerate(objects.names):
        n, per_image = int(objects.objects[c]), objects.per_image_hist[c]
        last = int(np.flatnonzero(per_image).max()) + 1 if per_image.any() else 0
        channels.append({
            "name": name, "objects": n, "objects_per_image_mean": _fraction(n, objects.images),
            "objects_per_image_max": int(objects.max_per_image[c]),
            "images_without_objects": int(per_image[0]),
            "objects_per_image_histogram": {"bin_lower_edges": [0] + [2**k for k in range(last - 1)],
                                            "counts": per_image[:last].tolist()},
            "object_size_max": int(objects.max_size[c]),
            "object_size_histogram": _histogram(objects.size_hist[c]),
            "images_with_touching_objects": int(objects.touching[c]) if settings.objects_from == "instance" else None,
        })
    return {"source": settings.objects_from, "connectivity": settings.connectivity, "images": objects.images,
            "channels": channels}


def build_stats(tally: AuditTally, plan: AuditPlan) -> dict:
    """The content of mask_stats.json (CONTRACT.md, "Mask audit output")."""
    counts, spec = tally.counts, plan.settings.spec
    weights = recommended_pos_weights(counts, plan.clamp)
    channels = []
    for c, name in enumerate(spec.classes):
        positive = int(counts.positive_pixels[c])
        channels.append({
            "name": name, "positive_pixels": positive, "total_pixels": counts.valid_pixels,
            "positive_fraction": _fraction(positive, counts.valid_pixels),
            "images_with_positives": int(counts.images_with_positives[c]),
            "empty_images": counts.images - int(counts.images_with_positives[c]),
            "negative_pixels": {d: int(weights[d]["negative"][c]) for d in NEGATIVE_DEFINITIONS},
            "pos_weight": {d: weights[d]["per_channel"][c] for d in NEGATIVE_DEFINITIONS},
            "pos_weight_unclamped": {d: weights[d]["unclamped"][c] for d in NEGATIVE_DEFINITIONS},
            "image_fraction_histogram": {"empty": int(tally.fraction_hist[c, 0]),
                                         "counts": tally.fraction_hist[c, 1:].tolist()},
        })
    allowed_note = None if spec.fmt == "multilabel" else (
        "all_zero applies to multilabel masks only (DECISIONS.md); listed for comparison")
    problems = sorted(set(plan.problems + tally.problems + never_positive_problems(tally, plan)),
                      key=lambda p: (p.file, p.kind, p.detail))
    return {
        "schema_version": SCHEMA_VERSION,
        "source": plan.source,
        "dataset": plan.dataset,
        "split": plan.split,
        "format": {"mask_format": spec.fmt, "classes": list(spec.classes),
                   "positive_values": list(spec.positive_values) if spec.positive_values else None,
                   "ignore_index": spec.ignore_index},
        "masks_found": len(plan.items),
        "images": counts.images,
        "masks_not_counted": len(plan.items) - counts.images,
        "pixels": {"total": counts.total_pixels, "valid": counts.valid_pixels,
                   "ignored": counts.total_pixels - counts.valid_pixels, "all_zero": counts.all_zero_pixels,
                   "all_zero_fraction": _fraction(counts.all_zero_pixels, counts.valid_pixels)},
        "images_without_valid_pixels": tally.images_all_ignored,
        "channels": channels,
        "global_pos_weight": {d: weights[d]["global"] for d in NEGATIVE_DEFINITIONS},
        "clamp": list(plan.clamp),
        "negatives_note": allowed_note,
        "image_fraction_bin_edges": [_sig(e) for e in FRACTION_EDGES],
        "image_sizes": [{"width": w, "height": h, "masks": n} for (h, w), n in sorted(tally.image_sizes.items())],
        "mask_dtypes": dict(sorted(tally.mask_dtypes.items())),
        "mask_values": [{"value": v, "pixels": p, "files": f} for v, (p, f) in sorted(tally.values.items())],
        "objects": _objects_json(tally.objects, plan.settings) if tally.objects is not None else None,
        "problem_counts": dict(sorted(Counter(p.kind for p in problems).items())),
        "problems": [{"file": p.file, "kind": p.kind, "detail": p.detail} for p in problems],
        "notes": plan.notes,
    }


def read_stats_file(path: str | Path, classes: list[str] | None = None):
    """(DatasetCounts, sha256) from a mask_stats.json, for ``loss.stats_file`` (see seg.stats.read_mask_stats).

    Raises ConfigError naming the file when it is unreadable, counts validation masks, or its
    classes differ from ``classes``.
    """
    from seg.strategy import DatasetCounts

    stats = read_mask_stats(path, classes)
    return DatasetCounts(stats["positive"], stats["valid_pixels"], stats["all_zero_pixels"]), stats["sha256"]


def never_positive_problems(tally: AuditTally, plan: AuditPlan) -> list[Problem]:
    """A channel with no positive pixel in any counted mask: one problem per channel."""
    where = plan.source.get("masks") or plan.source.get("root", "")
    return [Problem(where, "never_positive", f"channel '{name}' has no positive pixel in the {tally.counts.images} "
                    f"masks counted ({plan.split} split): its pos_weight takes the clamp maximum")
            for name, n in zip(plan.settings.spec.classes, tally.counts.positive_pixels) if tally.counts.images and n == 0]


# ------------------------------------------------------------------ plots and report.md


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def plot_positive_fraction(stats: dict, path: Path) -> None:
    """Horizontal bars, log scale: the positive fraction of each channel over the dataset."""
    names = [c["name"] for c in stats["channels"]]
    fractions = [c["positive_fraction"] or 0.0 for c in stats["channels"]]
    fig = _figure(7.0, 1.2 + 0.35 * len(names))
    ax = fig.subplots()
    shown = [f if f > 0 else np.nan for f in fractions]
    bars = ax.barh(range(len(names)), shown, color="tab:blue")
    ax.set_xscale("log")
    positive = [f for f in fractions if f > 0]
    ax.set_xlim(min(positive + [1e-3]) / 3, 3.0)
    for bar, f in zip(bars, fractions):
        y = bar.get_y() + bar.get_height() / 2
        label = _pct(f) if f > 0 else "never positive"
        ax.text(f * 1.08 if f > 0 else ax.get_xlim()[0] * 1.1, y, label, va="center", fontsize=8,
                color="black" if f > 0 else "tab:red")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("positive pixels / valid pixels (log scale)")
    ax.set_title(f"{stats['dataset']} ({stats['split']} split, {stats['images']} masks): positive fraction per channel",
                 fontsize=10)
    ax.grid(axis="x", which="major", alpha=0.3)
    fig.savefig(path)


def plot_image_fractions(stats: dict, path: Path) -> None:
    """Per channel, how many images have which positive fraction (log bins, plus the empty images)."""
    edges = np.asarray(stats["image_fraction_bin_edges"])
    channels = stats["channels"]
    cols = min(3, len(channels))
    rows = -(-len(channels) // cols)
    fig = _figure(max(6.5, 3.6 * cols), 2.3 * rows + 0.8)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, squeeze=False)).ravel()
    for ax, channel in zip(axes, channels):
        hist = channel["image_fraction_histogram"]
        ax.bar(np.log10(edges[:-1]), hist["counts"], width=np.diff(np.log10(edges)), align="edge",
               color="tab:blue", edgecolor="white", linewidth=0.5)
        empty_x = np.log10(edges[0]) - 0.75
        ax.bar(empty_x, hist["empty"], width=0.5, color="tab:gray")
        ax.set_title(f"{channel['name']} ({hist['empty']} empty)", fontsize=9)
        ticks = np.arange(np.log10(edges[0]), 0.01, 1.0)
        ax.set_xticks([empty_x] + list(ticks), ["0"] + [f"1e{int(t)}" if t else "1" for t in ticks],
                      fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(channels):]:
        ax.set_visible(False)
    fig.supxlabel("fraction of the image that is positive (log bins); gray: images with none", fontsize=9)
    fig.supylabel("images", fontsize=9)
    fig.suptitle(f"{stats['dataset']} ({stats['split']} split, {stats['images']} masks): per-image positive fraction",
                 fontsize=10)
    fig.savefig(path)


def plot_object_sizes(stats: dict, path: Path) -> None:
    """Object sizes (log2 bins) and objects per image, one row per channel with objects."""
    channels = [c for c in stats["objects"]["channels"] if c["objects"]]
    fig = _figure(9.0, 2.1 * len(channels) + 0.8)
    axes = fig.subplots(len(channels), 2, squeeze=False)
    for row, ((left, right), channel) in enumerate(zip(axes, channels)):
        sizes = channel["object_size_histogram"]
        left.bar(range(len(sizes["counts"])), sizes["counts"], color="tab:green", edgecolor="white")
        step = max(1, -(-len(sizes["counts"]) // 12))
        left.set_xticks(range(0, len(sizes["counts"]), step),
                        [_compact(e) for e in sizes["bin_lower_edges"][::step]], fontsize=7)
        left.set_title(f"{channel['name']}: {channel['objects']} objects", fontsize=9)
        if row == len(channels) - 1:
            left.set_xlabel("object size in pixels (log2 bins, lower edge)", fontsize=8)
            right.set_xlabel("objects in the image (log2 bins, lower edge)", fontsize=8)
        left.set_ylabel("objects", fontsize=8)
        per_image = channel["objects_per_image_histogram"]
        right.bar(range(len(per_image["counts"])), per_image["counts"], color="tab:purple", edgecolor="white")
        right.set_xticks(range(len(per_image["counts"])), [_compact(e) for e in per_image["bin_lower_edges"]],
                         fontsize=7)
        right.set_title(f"objects per image: mean {channel['objects_per_image_mean']:.3g}, "
                        f"max {channel['objects_per_image_max']}", fontsize=9)
        right.set_ylabel("images", fontsize=8)
    source = stats["objects"]["source"]
    fig.suptitle(f"{stats['dataset']}: objects ({'instance labels' if source == 'instance' else f'connected components of the {source} class'}, "
                 f"{stats['objects']['connectivity']}-connectivity)", fontsize=10)
    fig.savefig(path)


def _compact(n: int) -> str:
    return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}k" if n >= 1 << 10 else str(n)


def write_plots(stats: dict, folder: Path) -> list[str]:
    """Write the plots into ``folder``; return their file names."""
    plots = [("positive_fraction.png", plot_positive_fraction), ("image_positive_fraction.png", plot_image_fractions)]
    if stats["objects"] and any(c["objects"] for c in stats["objects"]["channels"]):
        plots.append(("object_sizes.png", plot_object_sizes))
    for name, plot in plots:
        plot(stats, folder / name)
    return [name for name, _ in plots]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.4g}%"


def _relative(file: str, base: Path) -> str:
    try:
        return str(Path(file).relative_to(base)) or "."
    except ValueError:
        return file


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def render_report(stats: dict, plots: list[str]) -> str:
    """report.md: the same numbers as mask_stats.json, for people."""
    fmt, px = stats["format"], stats["pixels"]
    source = ", ".join(f"{k} `{v}`" for k, v in stats["source"].items())
    detail = {"binary": f"positive_values {fmt['positive_values']}",
              "index": f"ignore_index {fmt['ignore_index']}"}.get(fmt["mask_format"], "")
    lines = [f"# Mask audit: {stats['dataset']} ({stats['split']} split)", "",
             f"Source: {source}. Format: {fmt['mask_format']}, {len(fmt['classes'])} channel(s)"
             + (f", {detail}." if detail else "."), "",
             f"- Masks counted: {stats['images']} of {stats['masks_found']} found"
             + (f" ({stats['masks_not_counted']} unreadable or malformed, see problems)" if stats["masks_not_counted"] else ""),
             f"- Pixels: {px['total']:,} in all, {px['valid']:,} valid, {px['ignored']:,} ignored ({_pct(_fraction(px['ignored'], px['total']))})",
             f"- All-zero pixels (no channel positive): {px['all_zero']:,} ({_pct(px['all_zero_fraction'])} of valid)",
             "- Image sizes (W x H): " + ", ".join(f"{s['width']}x{s['height']} ({s['masks']})" for s in stats["image_sizes"]),
             "- Mask dtypes: " + ", ".join(f"{k} ({v})" for k, v in stats["mask_dtypes"].items()),
             "- Mask values: " + ", ".join(str(v["value"]) for v in stats["mask_values"][:40])
             + (" ..." if len(stats["mask_values"]) > 40 else ""), ""]
    lines += notes if (notes := [f"> {n}" for n in stats["notes"]] + ([""] if stats["notes"] else [])) else []
    both = fmt["mask_format"] == "multilabel"  # elsewhere all_zero is refused by training: JSON only
    lines += ["## Channels", ""] + _table(
        ["channel", "positive", "positive pixels", "valid pixels", "images with positives", "empty images",
         "pos_weight (pixels)"] + ["pos_weight (all_zero)"] * both,
        [[c["name"], _pct(c["positive_fraction"]), f"{c['positive_pixels']:,}", f"{c['total_pixels']:,}",
          c["images_with_positives"], c["empty_images"], c["pos_weight"]["pixels"]]
         + [c["pos_weight"]["all_zero"]] * both for c in stats["channels"]])
    g = stats["global_pos_weight"]
    lines += ["", f"Global pos_weight (all channels pooled): {g['pixels']} (pixels)"
              + (f", {g['all_zero']} (all_zero)" if both else "") + ". "
              f"Weights are neg/pos clamped to {stats['clamp']}; a channel without positives takes the maximum. "
              "Positive fractions are of the valid (not ignored) pixels. `pixels`: negatives of channel c are the "
              "valid pixels where c is 0; `all_zero`: the pixels where no channel is positive."
              + (f" Note: {stats['negatives_note']}; see mask_stats.json." if stats["negatives_note"] else ""),
              "", "Training reads these counts with `loss.stats_file: <this folder>/mask_stats.json`.", ""]
    lines += [f"![{name}]({name})" for name in plots if name != "object_sizes.png"] + [""]
    if stats["objects"]:
        obj = stats["objects"]
        lines += ["## Objects", "", f"Source: {obj['source']}, {obj['connectivity']}-connectivity, "
                  f"{obj['images']} images.", ""] + _table(
            ["channel", "objects", "per image (mean)", "per image (max)", "images without objects",
             "largest object (px)", "images with touching objects"],
            [[c["name"], c["objects"], c["objects_per_image_mean"], c["objects_per_image_max"],
              c["images_without_objects"], c["object_size_max"],
              "n/a" if c["images_with_touching_objects"] is None else c["images_with_touching_objects"]]
             for c in obj["channels"]]) + [""]
        lines += ["![object_sizes.png](object_sizes.png)", ""] if "object_sizes.png" in plots else []
    problems = stats["problems"]
    lines += [f"## Problems ({len(problems)})", ""]
    if not problems:
        return "\n".join(lines + ["None found.", ""])
    lines += _table(["kind", "count"], [[k, n] for k, n in stats["problem_counts"].items()]) + [""]
    base = Path(stats["source"].get("root") or Path(stats["source"]["masks"]).parent)
    lines += [f"Files relative to `{base}`; mask_stats.json has full paths.", ""]
    lines += _table(["file", "kind", "detail"], [[f"`{_relative(p['file'], base)}`", p["kind"],
                                                  p["detail"].replace("|", "/")]
                                                 for p in problems[:MAX_REPORT_PROBLEMS]])
    if len(problems) > MAX_REPORT_PROBLEMS:
        lines += ["", f"... and {len(problems) - MAX_REPORT_PROBLEMS} more in mask_stats.json."]
    return "\n".join(lines + [""])


# ------------------------------------------------------------------ writing, atomically


def write_atomically(out_dir: Path, fill) -> None:
    """Build the folder with ``fill(tmp)`` in a temp folder beside ``out_dir``, then rename it into place.

    A failure leaves ``out_dir`` as it was (absent, or the previous audit) and no temp folder behind.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    try:
        fill(tmp)
        tmp.chmod(0o755)
        if out_dir.exists():
            os.rename(out_dir, old)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if old.exists():
                os.rename(old, out_dir)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def run_audit(plan: AuditPlan, workers: int | None = None, progress: bool = True) -> dict:
    """Read every mask of ``plan``, write the audit folder ``plan.out_dir``; return mask_stats.json's content."""
    tally = tally_masks(plan.items, plan.settings, workers or default_workers(), progress)
    stats = build_stats(tally, plan)

    def fill(folder: Path) -> None:
        stats["plots"] = write_plots(stats, folder)
        (folder / "mask_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
        (folder / "report.md").write_text(render_report(stats, stats["plots"]))

    write_atomically(plan.out_dir, fill)
    return stats
