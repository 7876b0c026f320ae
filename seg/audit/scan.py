"""Finding the masks for an audit, tolerantly, and the plan of what to read.

``scan_folder`` pairs masks with images (and instance labels) by stem and lists every
unmatched or duplicate file as a problem instead of stopping at the first;
``plan_from_config`` / ``plan_from_masks`` pick the split and build the ``AuditPlan``
that ``seg.audit.run_audit`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seg.config import BASE_CONFIG, Config, ConfigError, expand_path, mask_spec, read_yaml
from seg.config.specs import MaskSpec
from seg.data.folders import IMAGE_SUFFIXES, files_by_stem, find_splits, seeded_val_stems
from seg.data.formats import Faults, Problem
from seg.data.synthetic import is_default_root
from seg.errors import DataError

SPLITS = ("train", "val", "all")
OBJECT_SOURCES = ("instance", "positive", "negative")


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


def _mask_files(mask_dir: Path, spec: MaskSpec, faults: Faults) -> tuple[dict[str, tuple[Path, ...]], set[str]]:
    """Stem -> mask file(s), and the stems left out because a channel file is missing."""
    channel_dirs = [mask_dir / name for name in spec.classes]
    if not (spec.fmt == "multilabel" and spec.num_classes > 1 and any(d.is_dir() for d in channel_dirs)):
        return {stem: (path,) for stem, path in files_by_stem(mask_dir, faults).items()}, set()
    for folder in channel_dirs:
        if not folder.is_dir():
            raise DataError(
                f"{folder}: channel folder missing (masks/<channel>/ is needed for every data.classes name)"
            )
    per_channel = [files_by_stem(d, faults) for d in channel_dirs]
    stems = set().union(*per_channel)
    incomplete = set()
    for folder, files in zip(channel_dirs, per_channel, strict=False):
        for stem in sorted(stems - set(files)):
            faults.add(
                folder / f"{stem}.png",
                "missing_channel",
                f"no mask for '{stem}' in channel '{folder.name}': this image is not counted",
            )
            incomplete.add(stem)
    return {s: tuple(files[s] for files in per_channel) for s in sorted(stems - incomplete)}, incomplete


def scan_folder(
    mask_dir: Path, image_dir: Path, spec: MaskSpec, instance_dir: Path | None = None
) -> tuple[list[AuditItem], list[Problem]]:
    """Pair masks with images (and instance labels) by stem, listing every unmatched file as a problem."""
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: masks folder not found")
    faults = Faults(strict=False)
    masks, incomplete = _mask_files(mask_dir, spec, faults)
    images = files_by_stem(image_dir, faults) if image_dir.is_dir() else None
    if images is None:
        faults.add(
            image_dir, "missing_images", "no images folder beside the masks: pairing and image sizes are not checked"
        )
    else:
        for stem in sorted(set(images) - set(masks) - incomplete):
            faults.add(images[stem], "image_without_mask", f"no mask {mask_dir}/{stem}.*")
        for stem in sorted(set(masks) - set(images)):
            faults.add(masks[stem][0], "mask_without_image", f"no image {image_dir}/{stem}.*")
    instances = None
    if instance_dir is not None:
        if instance_dir.is_dir():
            instances = files_by_stem(instance_dir, faults)
            for stem in sorted(set(masks) - set(instances)):
                faults.add(masks[stem][0], "missing_instances", f"no instance labels {instance_dir}/{stem}.*")
        else:
            faults.add(instance_dir, "missing_instances", "no instances folder beside the masks")
    items = [
        AuditItem(stem, masks[stem], images.get(stem) if images else None, instances.get(stem) if instances else None)
        for stem in sorted(masks)
    ]
    if not items:
        raise DataError(f"{mask_dir}: no masks found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items, faults.problems


def _pick(items: list[AuditItem], val_stems: list[str], split: str) -> list[AuditItem]:
    chosen = set(val_stems)
    return [i for i in items if (i.stem in chosen) == (split == "val")] if split != "all" else items


def dataset_name(folder: Path) -> str:
    """``.../camvid/train/masks`` -> ``camvid``: the first folder up that is not a split or masks folder."""
    for part in reversed(folder.resolve().parts):
        if part not in ("masks", "train", "val", "test", "labels", "annotations"):
            return part
    return "masks"


def _clamp(values) -> tuple[float, float]:
    low, high = values
    return float(low), float(high)


def _objects_from(fmt: str, objects: bool | None, objects_from: str | None, default: str) -> str | None:
    if objects is False or (objects is None and fmt != "instance" and objects_from is None):
        return None
    source = objects_from or ("instance" if fmt == "instance" else default)
    if source == "instance" and fmt != "instance":
        raise ConfigError(f"--objects-from instance needs mask format instance (got {fmt}); use positive or negative")
    return source


def plan_from_config(
    cfg: Config,
    config_path: str,
    split: str = "train",
    out: str | None = None,
    objects: bool | None = None,
    objects_from: str | None = None,
) -> AuditPlan:
    """Audit the data of a training config: its training split by default, split as training splits it."""
    d = cfg.data
    spec = mask_spec(cfg)
    root = expand_path(d.root)
    if not root.is_dir():
        raise DataError(
            f"{root}: data folder not found (data.root in {config_path}"
            + (
                "; the synthetic set is generated by the first training run)"
                if d.synthetic and is_default_root(root)
                else ")"
            )
        )
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = root / "val" if (root / "val" / "images").is_dir() and (root / "val" / "masks").is_dir() else None
    if d.test_folder == "val":  # val/ is the test split: validation is carved from train/
        val_dir = None
    inst = (lambda folder: folder / "instances") if spec.fmt == "instance" else (lambda folder: None)
    items: list[AuditItem] = []
    problems: list[Problem] = []
    notes: list[str] = []
    if val_dir is None or split != "val":
        found, problems = scan_folder(train_dir / "masks", train_dir / "images", spec, inst(train_dir))
        if val_dir is None and split != "all":
            test_stems: list[str] = []
            try:
                splits = find_splits(
                    root,
                    spec,
                    d.val_fraction,
                    d.split_seed,
                    d.val_stems,
                    test_fraction=d.test_fraction,
                    test_folder=d.test_folder,
                    test_stems=d.test_stems,
                )
                val_stems, test_stems = splits.val_stems, splits.test_stems or []
            except DataError:
                val_stems = d.val_stems or seeded_val_stems([i.stem for i in found], d.val_fraction, d.split_seed)
                notes.append(
                    "Training would refuse this folder as it is (see problems); the split shown applies "
                    "the same seeded rule to the masks found."
                )
            held_out = set(test_stems)  # a carved test split is never audited as training or validation
            found = _pick([i for i in found if i.stem not in held_out], val_stems, split)
        items += found
    if val_dir is not None and split in ("val", "all"):
        found, more = scan_folder(val_dir / "masks", val_dir / "images", spec, inst(val_dir))
        items, problems = items + found, problems + more
    if not items:
        raise DataError(f"{root}: no masks in the {split} split")
    border = cfg.loss.border
    default_from = border.instances_from if spec.fmt == "binary" and border.instances_from != "instance" else "positive"
    return AuditPlan(
        items,
        problems,
        AuditSettings(spec, _objects_from(spec.fmt, objects, objects_from, default_from), border.connectivity),
        _clamp(cfg.loss.clamp),
        split,
        root.name,
        {"config": str(config_path), "root": str(root)},
        Path(out) if out else expand_path(cfg.run.out_dir) / f"audit-{root.name}",
        notes,
    )


def plan_from_masks(
    mask_dir: Path,
    spec: MaskSpec,
    split: str = "all",
    out: str | None = None,
    objects: bool | None = None,
    objects_from: str | None = None,
    connectivity: int = 4,
    clamp: tuple[float, float] | None = None,
) -> AuditPlan:
    """Audit one folder of masks; images are looked for in a sibling ``images/``."""
    mask_dir = Path(mask_dir)
    items, problems = scan_folder(
        mask_dir, mask_dir.parent / "images", spec, mask_dir.parent / "instances" if spec.fmt == "instance" else None
    )
    defaults = read_yaml(BASE_CONFIG)
    if split != "all":
        data = defaults["data"]
        items = _pick(items, seeded_val_stems([i.stem for i in items], data["val_fraction"], data["split_seed"]), split)
        if not items:
            raise DataError(f"{mask_dir}: no masks in the {split} split ({len(problems)} problem(s) while scanning)")
    name = dataset_name(mask_dir.parent)
    return AuditPlan(
        items,
        problems,
        AuditSettings(spec, _objects_from(spec.fmt, objects, objects_from, "positive"), connectivity),
        clamp or _clamp(defaults["loss"]["clamp"]),
        split,
        name,
        {"masks": str(mask_dir.resolve())},
        Path(out) if out else expand_path(defaults["run"]["out_dir"]) / f"audit-{name}",
    )
