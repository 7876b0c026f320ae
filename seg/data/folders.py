"""Find images and their masks on disk, and split them into train and val.

Accepted layouts under ``data.root``::

    root/images/, root/masks/ [, root/instances/]            one folder: split by val_fraction
    root/train/{images,masks}/ [, root/val/{images,masks}/]  split folders
    [root/test/{images,masks}/]                              a labelled test split

A split folder with images but no ``masks/`` (ISBI ``test/``) is an unlabelled
prediction set, never a split. Files are matched by stem (``a.png`` <-> ``a.png``).
For multilabel masks stored one file per channel: ``masks/<channel>/<stem>.png``.

The test split (:func:`find_splits`), held out from everything training and validation choose:
``data.test_folder`` names a labelled folder (CamVid: ``val``, whose images then are not
validation: validation is carved from ``train/``); or ``data.test_fraction`` carves a seeded
fraction of the labelled training images off first (ISBI), validation being carved from the
rest; or else a labelled ``test/`` folder is the test split; or there is none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from seg.config.specs import MaskSpec
from seg.data.formats import Faults
from seg.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True)
class Sample:
    """One image with its mask file(s) and optional instance labels."""

    stem: str
    image: Path
    masks: tuple[Path, ...]
    instances: Path | None = None


def files_by_stem(folder: Path, faults: Faults | None = None) -> dict[str, Path]:
    """Stem -> image file in ``folder``; two files with one stem are a fault (strict by default; tolerant: first)."""
    faults = Faults(strict=True) if faults is None else faults
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in files:
                first = files[path.stem].name
                faults.add(
                    path,
                    "duplicate_stem",
                    f"duplicate file stem '{path.stem}' (also {first})",
                    f"; only {first} is read",
                )
            else:
                files[path.stem] = path
    return files


def _mask_files(mask_dir: Path, spec: MaskSpec) -> dict[str, tuple[Path, ...]]:
    """Stem -> mask file(s). Multilabel with one folder per channel needs every channel."""
    channel_dirs = [mask_dir / name for name in spec.classes]
    if spec.fmt == "multilabel" and spec.num_classes > 1 and all(d.is_dir() for d in channel_dirs):
        per_channel = [files_by_stem(d) for d in channel_dirs]
        stems = set().union(*per_channel)
        for name, files in zip(spec.classes, per_channel, strict=True):
            missing = sorted(stems - set(files))
            if missing:
                raise DataError(
                    f"{mask_dir / name}: no mask for '{missing[0]}' in channel '{name}' "
                    f"({len(missing)} missing); every channel needs a file per image"
                )
        return {stem: tuple(files[stem] for files in per_channel) for stem in sorted(stems)}
    return {stem: (path,) for stem, path in files_by_stem(mask_dir).items()}


def find_samples(split_dir: Path, spec: MaskSpec, need_instances: bool = False) -> list[Sample]:
    """Pair ``images/`` with ``masks/`` (and ``instances/``) by stem; refuse any unmatched file."""
    image_dir, mask_dir, inst_dir = split_dir / "images", split_dir / "masks", split_dir / "instances"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (expected {split_dir}/images and {split_dir}/masks)")
    images, masks = files_by_stem(image_dir), _mask_files(mask_dir, spec)
    if not images:
        raise DataError(f"{image_dir}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for stem in sorted(images):
        if stem not in masks:
            raise DataError(f"{images[stem]}: image has no mask (looked for {mask_dir}/{stem}.*)")
    for stem in sorted(masks):
        if stem not in images:
            raise DataError(f"{masks[stem][0]}: mask has no image (looked for {image_dir}/{stem}.*)")
    instances: dict[str, Path] = {}
    if need_instances:
        if not inst_dir.is_dir():
            raise DataError(
                f"{inst_dir}: folder not found; loss.border.instances_from: instance needs "
                "16-bit instance labels beside images/ and masks/"
            )
        instances = files_by_stem(inst_dir)
        missing = sorted(set(images) - set(instances))
        if missing:
            raise DataError(f"{images[missing[0]]}: image has no instance labels in {inst_dir}")
    return [Sample(stem, images[stem], masks[stem], instances.get(stem)) for stem in sorted(images)]


def _has_masks(split_dir: Path) -> bool:
    return (split_dir / "images").is_dir() and (split_dir / "masks").is_dir()


def seeded_val_stems(stems: list[str], val_fraction: float, split_seed: int) -> list[str]:
    """The seeded split rule: ``val_fraction`` of ``stems`` (at least one, never all), shuffled with ``split_seed``.

    Returns the validation stems, sorted. The order of ``stems`` does not matter.
    """
    stems = sorted(stems)
    random.Random(split_seed).shuffle(stems)
    return sorted(stems[: min(len(stems) - 1, max(1, round(val_fraction * len(stems))))])


@dataclass(frozen=True)
class Splits:
    """The data's splits. ``test`` is empty when there is no labelled test split; ``test_stems`` is set
    when the test split was carved from the training images (to be recorded, like ``val_stems``);
    ``test_source`` says where the test split came from, in words ("" when there is none)."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    val_stems: list[str]
    test_stems: list[str] | None
    test_source: str


def _carve(samples: list[Sample], stems: list[str] | None, fraction: float, seed: int, key: str, where: Path):
    """(rest, carved, carved stems): ``stems`` when given (a recorded split), else the seeded rule."""
    if len(samples) < 2:
        raise DataError(f"{where}: {len(samples)} labelled image(s); need at least 2 to split off data.{key}")
    if stems is None:
        stems = seeded_val_stems([s.stem for s in samples], fraction, seed)
    unknown = sorted(set(stems) - {s.stem for s in samples})
    if unknown:
        raise DataError(f"{where}: data.{key} names '{unknown[0]}', which has no image here")
    chosen = set(stems)
    return [s for s in samples if s.stem not in chosen], [s for s in samples if s.stem in chosen], list(stems)


def find_splits(
    root: Path,
    spec: MaskSpec,
    val_fraction: float,
    split_seed: int,
    val_stems: list[str] | None = None,
    need_instances: bool = False,
    test_fraction: float = 0.0,
    test_folder: str | None = None,
    test_stems: list[str] | None = None,
) -> Splits:
    """Train, validation and test samples.

    Test first: ``root/<test_folder>`` (labelled), or ``test_fraction`` of the training images chosen with
    ``split_seed`` (or exactly ``test_stems``), or a labelled ``root/test/``, or none. Then validation: a
    labelled ``root/val/`` unless it is the test folder; otherwise ``val_fraction`` of the remaining
    training images, chosen with ``split_seed`` (:func:`seeded_val_stems`), or exactly ``val_stems`` when
    given (a resumed or evaluated run repeats its recorded split).
    """
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (data.root)")
    train_dir = root / "train" if (root / "train").is_dir() else root
    samples = find_samples(train_dir, spec, need_instances)
    test: list[Sample] = []
    carved: list[str] | None = None
    source = ""
    if test_folder is not None:
        if not _has_masks(root / test_folder):
            raise DataError(f"{root / test_folder}: data.test_folder needs a labelled split here (images/ and masks/)")
        test, source = find_samples(root / test_folder, spec, need_instances), f"the labelled folder {test_folder}/"
    elif test_fraction > 0:
        samples, test, carved = _carve(samples, test_stems, test_fraction, split_seed, "test_stems", train_dir)
        source = f"carved from {train_dir.name}/ (data.test_fraction {test_fraction:g}, split seed {split_seed})"
    elif _has_masks(root / "test"):
        test, source = find_samples(root / "test", spec, need_instances), "the labelled folder test/"
    if test_folder != "val" and _has_masks(root / "val"):
        val = find_samples(root / "val", spec, need_instances)
        return Splits(samples, val, test, [s.stem for s in val], carved, source)
    train, val, val_stems = _carve(samples, val_stems, val_fraction, split_seed, "val_stems", train_dir)
    return Splits(train, val, test, val_stems, carved, source)


def split_samples(
    root: Path,
    spec: MaskSpec,
    val_fraction: float,
    split_seed: int,
    val_stems: list[str] | None = None,
    need_instances: bool = False,
) -> tuple[list[Sample], list[Sample], list[str]]:
    """(train, val, val_stems) of :func:`find_splits` for data without a carved test split."""
    splits = find_splits(root, spec, val_fraction, split_seed, val_stems, need_instances)
    return splits.train, splits.val, splits.val_stems
