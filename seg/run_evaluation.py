"""evaluate_run(run_dir, split) -> results: the best checkpoint of a finished run, evaluated.

Writes into the run directory:

    eval-<split>.json              {"run", "split", "checkpoint", "epoch", "effective_pos_weight",
                                    "loss", "metrics": the val-style block (seg.scoring.validation)}
    eval-<split>.md                the Markdown table (seg.outputs.tables.results_table)
    eval-<split>-overlays.png      image | ground truth | prediction, at metrics.threshold
    eval-<split>-reliability.png   reliability diagram, raw and prior-corrected
    eval/<split>/wandb/            a W&B run of its own (same project and group, job_type "eval"):
                                   the table, the overlays and the headline numbers

``val`` is the run's recorded validation split. ``test`` needs labelled images in
``<data.root>/test/{images,masks}``; its ``tuned`` thresholds are those found on val,
applied unchanged (not tuned on test).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from seg import checkpoint
from seg.config import Config, ConfigError, expand_path, mask_spec, read_yaml, validate
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.folders import find_samples, split_samples
from seg.data.synthetic import ensure_synthetic
from seg.data.transforms import eval_transform
from seg.engine import StepOptions, evaluate, overlay_examples
from seg.errors import DataError
from seg.files import strict, write_json_atomic, write_text_atomic
from seg.models import build_model
from seg.outputs.overlays import overlay_grid, save_overlay_grid
from seg.outputs.reliability import plot_reliability
from seg.outputs.tables import results_table
from seg.provenance import provenance
from seg.results import EvalResult
from seg.scoring.thresholds import log_q
from seg.scoring.validation import Evaluator
from seg.tracking import Tracker
from seg.training import resolve_device

SPLITS = ("val", "test")


def load_run(run_dir: Path, device: torch.device | str = "cpu") -> tuple[Config, dict]:
    """The run's resolved config and its best checkpoint; a missing file is a user error (exit 2)."""
    config_path, best = run_dir / "config.yaml", run_dir / "checkpoints" / "best.pt"
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: run directory not found (expected runs/RUN_NAME)")
    if not best.is_file():
        raise ConfigError(f"{best}: no best checkpoint; train the run first (scripts/train.py)")
    return validate(read_yaml(config_path), str(config_path)), checkpoint.load(best, device)


def split_dataset(cfg: Config, split: str) -> SegmentationDataset:
    """The validation split recorded in the run's config, or the labelled ``test/`` folder."""
    root, spec = expand_path(cfg.data.root), mask_spec(cfg)
    if cfg.data.synthetic:
        ensure_synthetic(root)
    if split == "test":
        if not ((root / "test" / "images").is_dir() and (root / "test" / "masks").is_dir()):
            raise DataError(f"{root / 'test'}: no labelled test split (needs images/ and masks/); use --split val")
        samples = find_samples(root / "test", spec)
    else:
        _, samples, _ = split_samples(root, spec, cfg.data.val_fraction, cfg.data.split_seed, cfg.data.val_stems)
        if cfg.data.max_val_images:
            samples = samples[: cfg.data.max_val_images]
    return SegmentationDataset(samples, spec, eval_transform())


def _run_pass(model, dataset, evaluator: Evaluator, options: StepOptions, cfg: Config, desc: str) -> float:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=pad_collate,
    )
    return evaluate(model, loader, evaluator, options, desc=desc)


def evaluate_run(
    run_dir: str | Path,
    split: str = "val",
    device: str | None = None,
    overlays: int = 8,
    wandb_mode: str | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate ``run_dir``'s best.pt on ``split``; write the files listed above; return the JSON content."""
    if split not in SPLITS:
        raise ConfigError(f"--split: expected one of {SPLITS}, got {split!r}")
    run_dir = Path(run_dir)
    cfg, saved = load_run(run_dir)
    dev = resolve_device(device or cfg.train.device)
    names = list(cfg.data.classes)
    model = build_model(cfg.model.arch, cfg.model.encoder, None, len(names))
    checkpoint.load_model_state(model, saved["model"], run_dir / "checkpoints" / "best.pt")
    model = model.to(dev)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    options = StepOptions(dev, amp=cfg.train.amp, channels_last=cfg.train.channels_last, progress=progress)
    effective = list(saved.get("effective_pos_weight") or [1.0] * len(names))

    test_set = split_dataset(cfg, "test") if split == "test" else None  # refused before any work if missing
    dataset = split_dataset(cfg, "val")
    evaluator = Evaluator.from_config(cfg.metrics, len(names), dev, log_q(effective))
    loss = _run_pass(model, dataset, evaluator, options, cfg, "val")
    if test_set is not None:  # thresholds tuned on val, applied unchanged to test
        tuned = evaluator.collect()[1]["tuned"]
        dataset = test_set
        evaluator = Evaluator.from_config(cfg.metrics, len(names), dev, log_q(effective), tuned)
        loss = _run_pass(model, dataset, evaluator, options, cfg, "test")
    metrics = evaluator.compute(names)
    path = run_dir / f"eval-{split}.json"
    record = {
        "run": cfg.run.name,
        "split": split,
        "checkpoint": "checkpoints/best.pt",
        "epoch": saved.get("epoch"),
        "effective_pos_weight": effective,
        "loss": loss,
        "metrics": metrics,
        "provenance": provenance(str(dev)),
    }
    result = EvalResult.from_dict(strict(record), path).to_dict()  # the typed record is what is written

    title = f"{cfg.run.name}: {split} (best.pt, epoch {saved.get('epoch')})"
    table = results_table(metrics, names, title)
    write_json_atomic(path, result)
    write_text_atomic(run_dir / f"eval-{split}.md", table)
    plot_reliability(
        evaluator.reliability(),
        names,
        run_dir / f"eval-{split}-reliability.png",
        title=f"{cfg.run.name}: reliability on {split}",
    )
    threshold = torch.logit(torch.tensor([metrics["thresholds"][n] for n in names], dtype=torch.float64))
    examples = overlay_examples(model, dataset, overlays, options, threshold.float().view(-1, 1, 1))
    if examples[0]:
        save_overlay_grid(
            overlay_grid(*examples),
            names,
            run_dir / f"eval-{split}-overlays.png",
            title=f"{title}, threshold {evaluator.threshold}",
        )
    _log_to_wandb(cfg, run_dir, split, metrics, names, examples, wandb_mode or cfg.logging.wandb.mode)
    return result


def _log_to_wandb(
    cfg: Config, run_dir: Path, split: str, metrics: dict, names: list[str], examples: tuple, mode: str
) -> None:
    """A W&B run of its own under eval/<split>/ (so the training run's step history is left alone)."""
    if mode == "disabled":
        return
    folder = run_dir / "eval" / split
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wandb_run_id.txt").unlink(missing_ok=True)  # a fresh W&B run per evaluation
    tracker = Tracker(
        folder,
        mode,
        cfg.logging.wandb.project,
        cfg.logging.wandb.group or cfg.run.name,
        f"{cfg.run.name}-eval-{split}",
        {"run": cfg.run.name, "split": split},
        tags=["eval"],
    )
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
    if examples[0]:
        images, truths, predictions = examples
        tracker.log_overlays(f"eval/{split}/examples", images, truths, predictions, names, step=1)
    tracker.log_image_file(f"eval/{split}/reliability", run_dir / f"eval-{split}-reliability.png", step=1)
    headline = {
        f"eval/{split}/{policy}/{m}": block[m]
        for policy, block in metrics["by_threshold"].items()
        for m in ("dice", "iou")
    }
    headline.update({f"eval/{split}/dice": metrics["dice"], f"eval/{split}/iou": metrics["iou"]})
    tracker.summary({k: v for k, v in headline.items() if v is not None and not math.isnan(v)})
    tracker.finish()
