"""evaluate_run(run_dir, split) -> results: a finished run's checkpoint, evaluated with choices made on validation.

Nested evaluation: a first pass over the validation split chooses the ``tuned`` thresholds and fits
Platt scaling (metrics.calibration_pixels pixels per image, seeded with run.seed); a second pass
scores ``split`` with those choices applied unchanged. On ``test`` that is an honest held-out
score; on ``val`` the choices were made on the images scored (optimistic, and said so).

Writes into the run directory (``-last`` added to the names for ``checkpoint="last"``):

    eval-<split>.json              {"run", "split", "checkpoint", "epoch", "effective_pos_weight",
                                    "loss", "metrics": the val-style block (seg.scoring.validation),
                                    "provenance", "split_source", "scored_on", "chosen_on"
                                    (split, number of images, stems hash, thresholds, Platt parameters),
                                    "per_image" {policy: {stem: scores}}}
    eval-<split>.md                the Markdown table (seg.outputs.tables.results_table)
    eval-<split>-overlays.png      image | ground truth | prediction, at metrics.threshold
    eval-<split>-reliability.png   reliability diagram: raw, prior-corrected and Platt-scaled
    eval/<split>/wandb/            a W&B run of its own (same project and group, job_type "eval"):
                                   the table, the overlays and the headline numbers

``val`` is the run's recorded validation split; ``test`` is the data's labelled test split
(data.test_folder, data.test_fraction with the recorded data.test_stems, or a labelled test/).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from seg import checkpoint
from seg.config import Config, ConfigError, mask_spec, read_run_config
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.folders import Splits
from seg.data.transforms import eval_transform
from seg.distributed import resolve_device
from seg.engine import StepOptions, evaluate, overlay_examples
from seg.errors import DataError
from seg.files import strict, write_json_atomic, write_text_atomic
from seg.models import build_model
from seg.outputs.overlays import overlay_grid, save_overlay_grid
from seg.outputs.reliability import plot_reliability
from seg.outputs.tables import results_table
from seg.provenance import provenance
from seg.results import ChosenOn, EvalResult
from seg.run_data import data_splits, needs_instance_files, structure_settings
from seg.run_files import model_artifact
from seg.scoring.thresholds import log_q
from seg.scoring.validation import Evaluator
from seg.tracking import Tracker

SPLITS = ("val", "test")
CHECKPOINTS = ("best", "last")
COUNTS = ("merges", "splits", "objects_true", "objects_pred")  # structure values not in [0, 1]: the JSON block only


def load_run(run_dir: Path, which: str = "best", device: torch.device | str = "cpu") -> tuple[Config, dict]:
    """The run's resolved config and its ``which`` checkpoint; a missing file is a user error (exit 2)."""
    if which not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint: expected one of {CHECKPOINTS}, got {which!r}")
    config_path, path = run_dir / "config.yaml", run_dir / "checkpoints" / f"{which}.pt"
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: run directory not found (expected runs/RUN_NAME)")
    if not path.is_file():
        raise ConfigError(f"{path}: no {which} checkpoint; train the run first (scripts/train.py)")
    return read_run_config(config_path), checkpoint.load(path, device)


def stems_sha256(stems: list[str]) -> str:
    """sha256 of the sorted stems joined by newlines: which images, in 64 hex digits."""
    return hashlib.sha256("\n".join(sorted(stems)).encode()).hexdigest()


def split_dataset(cfg: Config, split: str, splits: Splits | None = None) -> tuple[SegmentationDataset, str]:
    """The validation split recorded in the run's config, or the data's labelled test split; and where it
    comes from, in words. ``splits``: the config's splits when already found (:func:`data_splits`)."""
    splits = splits or data_splits(cfg, needs_instance_files(cfg))
    if split == "test":
        if not splits.test:
            raise DataError(
                f"{cfg.data.root}: no labelled test split (set data.test_folder or data.test_fraction, or add "
                "test/images and test/masks); use --split val"
            )
        samples, source = splits.test, splits.test_source
    else:
        samples = splits.val
        cap = cfg.data.max_val_images
        source = f"the validation split ({'the first ' + str(cap) + ' images, ' if cap else ''}data.val_stems)"
    return SegmentationDataset(samples, mask_spec(cfg), eval_transform()), source


def _run_pass(model, dataset, evaluator: Evaluator, options: StepOptions, cfg: Config, desc: str) -> float:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=pad_collate,
    )
    return evaluate(model, loader, evaluator, options, desc=desc)


def _split_info(split: str, dataset: SegmentationDataset) -> dict:
    stems = [s.stem for s in dataset.samples]
    return {"split": split, "num_images": len(stems), "stems_sha256": stems_sha256(stems)}


def evaluate_run(
    run_dir: str | Path,
    split: str = "val",
    device: str | None = None,
    overlays: int = 8,
    wandb_mode: str | None = None,
    progress: bool = True,
    which: str = "best",
) -> dict:
    """Evaluate ``run_dir``'s ``which`` checkpoint (best | last) on ``split``; write the files listed above;
    return the JSON content."""
    if split not in SPLITS:
        raise ConfigError(f"--split: expected one of {SPLITS}, got {split!r}")
    run_dir = Path(run_dir)
    cfg, saved = load_run(run_dir, which)
    dev = resolve_device(device or cfg.train.device)
    names = list(cfg.data.classes)
    model = build_model(cfg.model.arch, cfg.model.encoder, None, len(names))
    checkpoint.load_model_state(model, saved["model"], run_dir / "checkpoints" / f"{which}.pt")
    model = model.to(dev)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    options = StepOptions(
        dev, amp=cfg.train.amp, amp_cpu=cfg.train.amp_cpu, channels_last=cfg.train.channels_last, progress=progress
    )
    effective = list(saved.get("effective_pos_weight") or [1.0] * len(names))
    epoch = saved.get("epoch", (saved.get("state") or {}).get("epoch"))

    splits = data_splits(cfg, needs_instance_files(cfg))
    dataset, source = split_dataset(cfg, split, splits)  # a missing test split is refused before any work
    val_set, _ = split_dataset(cfg, "val", splits)
    chooser = Evaluator.from_config(
        cfg.metrics,
        len(names),
        dev,
        log_q(effective),
        calibration_pixels=cfg.metrics.calibration_pixels,
        seed=cfg.run.seed,
    )
    _run_pass(model, val_set, chooser, options, cfg, "val (choosing thresholds)")
    tuned = chooser.collect()[1]["tuned"]
    platt = chooser.fit_platt()
    chosen = ChosenOn(
        **_split_info("val", val_set),
        thresholds={n: round(float(p), 6) for n, p in zip(names, tuned, strict=True)},
        platt=None
        if platt is None
        else {n: {"a": float(platt[0][c]), "b": float(platt[1][c])} for c, n in enumerate(names)},
    )
    where = f"val ({chosen.num_images} images, stems sha256 {chosen.stems_sha256[:12]})"
    note = f"thresholds tuned on {where}, applied unchanged" + (
        "; scored on the same images (optimistic)" if split == "val" else ""
    )
    evaluator = Evaluator.from_config(
        cfg.metrics,
        len(names),
        dev,
        log_q(effective),
        tuned,
        tuned_note=note,
        platt=platt,
        platt_fitted_on=f"fitted on {where}" if platt is not None else None,
        structure=structure_settings(cfg, dataset.samples),
    )
    loss = _run_pass(model, dataset, evaluator, options, cfg, split)
    metrics = evaluator.compute(names)
    suffix = "" if which == "best" else f"-{which}"
    path = run_dir / f"eval-{split}{suffix}.json"
    record = {
        "run": cfg.run.name,
        "split": split,
        "checkpoint": f"checkpoints/{which}.pt",
        "epoch": epoch,
        "effective_pos_weight": effective,
        "loss": loss,
        "metrics": metrics,
        "provenance": provenance(str(dev)),
        "split_source": source,
        "scored_on": _split_info(split, dataset),
        "chosen_on": chosen.to_dict(),
        "per_image": evaluator.per_image(names, [s.stem for s in dataset.samples]),
    }
    result = EvalResult.from_dict(strict(record), path).to_dict()  # the typed record is what is written

    title = f"{cfg.run.name}: {split} ({which}.pt, epoch {epoch})"
    table = results_table(metrics, names, title)
    write_json_atomic(path, result)
    write_text_atomic(run_dir / f"eval-{split}{suffix}.md", table)
    plot_reliability(
        evaluator.reliability(),
        names,
        run_dir / f"eval-{split}{suffix}-reliability.png",
        title=f"{cfg.run.name}: reliability on {split}" + (" (Platt fitted on val)" if platt is not None else ""),
    )
    threshold = torch.logit(torch.tensor([metrics["thresholds"][n] for n in names], dtype=torch.float64))
    one_class = cfg.data.mask_format == "index"
    examples = overlay_examples(model, dataset, overlays, options, threshold.float().view(-1, 1, 1), one_class)
    if examples[0]:
        save_overlay_grid(
            overlay_grid(*examples),
            names,
            run_dir / f"eval-{split}{suffix}-overlays.png",
            title=f"{title}, threshold {evaluator.threshold}",
        )
    tracker = _eval_tracker(cfg, run_dir, split + suffix, wandb_mode or cfg.logging.wandb.mode)
    tracker.use_model(f"{model_artifact(cfg.run.name)}:{ALIASES[which]}", run_dir / "checkpoints" / f"{which}.pt")
    _log_to_wandb(tracker, run_dir, split + suffix, metrics, names, examples, one_class)
    return result


ALIASES = {"best": "best", "last": "latest"}  # checkpoint -> the alias of its version of the model artifact


def _eval_tracker(cfg: Config, run_dir: Path, split: str, mode: str) -> Tracker:
    """A W&B run of its own under eval/<split>/ (job_type eval, the training run's group), so the training
    run's history is left alone."""
    folder = run_dir / "eval" / split
    if mode != "disabled":
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "wandb_run_id.txt").unlink(missing_ok=True)  # a fresh W&B run per evaluation
    return Tracker(
        folder,
        mode,
        cfg.logging.wandb.project,
        cfg.wandb_group,
        f"{cfg.wandb_name}-eval-{split}",
        {"run": cfg.run.name, "split": split},
        tags=["eval"],
        job_type="eval",
    )


def _log_to_wandb(
    tracker: Tracker,
    run_dir: Path,
    split: str,
    metrics: dict,
    names: list[str],
    examples: tuple[list, list, list],
    one_class: bool,
) -> None:
    """The evaluation's table, overlays, reliability diagram and headline scores; closes the run."""
    rows = []
    for policy, block in metrics["by_threshold"].items():
        for name in names:
            rows.append(
                [
                    policy,
                    name,
                    block["per_channel"][name]["dice"],
                    block["per_channel"][name]["iou"],
                    block["thresholds"][name],
                ]
            )
        rows.append([policy, "macro", block["dice"], block["iou"], None])
    tracker.log_table(f"eval/{split}/table", ["threshold", "channel", "dice", "iou", "probability"], rows)
    images, truths, predictions = examples
    tracker.log_overlays(f"eval/{split}/examples", images, truths, predictions, names, index=one_class)
    tracker.log_image_files({f"eval/{split}/reliability": run_dir / f"eval-{split}-reliability.png"})
    headline = {
        f"eval/{split}/{policy}/{m}": block[m]
        for policy, block in metrics["by_threshold"].items()
        for m in ("dice", "iou")
    }
    headline.update({f"eval/{split}/dice": metrics["dice"], f"eval/{split}/iou": metrics["iou"]})
    for policy, block in (metrics.get("structure") or {}).get("by_threshold", {}).items():
        scores = {k: v for k, v in block["mean"].items() if k not in COUNTS and v is not None}  # in [0, 1] only
        headline.update({f"eval/{split}/{policy}/{k}": v for k, v in scores.items()})
    for variant, value in (metrics["ece"].get("brier_mean") or {}).items():
        headline[f"eval/{split}/brier/{variant}"] = value
    tracker.summary({k: v for k, v in headline.items() if v is not None and not math.isnan(v)})
    tracker.finish()
