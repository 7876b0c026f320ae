"""fit(config) -> summary: a whole training run in its run directory.

Run directory: config.yaml, metrics.jsonl, summary.json, checkpoints/{last,best}.pt, wandb/.
Training the same run.name again resumes from last.pt (refused when the config differs other
than train.epochs; see seg.schedule for what another train.epochs does); a finished run prints
its summary; a run whose last epoch was saved but whose summary.json was not written (killed
in between) writes it and exits 0. A run that fails is marked with a FAILED file. A non-finite
loss stops training (TrainingDiverged, exit 3) before any checkpoint with non-finite weights
is written: last.pt and best.pt keep the last good epoch.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seg import checkpoint, schedule
from seg.config import (
    Config,
    ConfigError,
    config_diff,
    config_to_dict,
    expand_path,
    read_yaml,
    replace,
    save_config,
    validate,
)
from seg.data.build import RunData, build_datasets, prepare_data
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.engine import StepOptions, all_finite, effective_weights, epoch_row, evaluate, train_one_epoch
from seg.errors import TrainingDiverged
from seg.files import json_text, make_folder, strict, write_json_atomic, write_text_atomic
from seg.models import build_model
from seg.outputs.examples import overlay_examples
from seg.provenance import provenance
from seg.scoring.thresholds import log_q
from seg.scoring.validation import Evaluator
from seg.tracking import Tracker, append_metrics, truncate_metrics
from seg.weighting.registry import DatasetCounts, Weighting, build_weighting

FAILED = "FAILED"


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_directory(cfg: Config) -> Path:
    return expand_path(cfg.run.out_dir) / cfg.run.name


def check_resume(cfg: Config, run_dir: Path) -> dict | None:
    """None for a fresh run; the finished summary for a completed one; {} to resume.

    A run directory left by an attempt that failed before its first checkpoint holds nothing
    to resume: it is started afresh, even with another config.
    """
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return None
    if not (run_dir / "checkpoints" / "last.pt").is_file() and not (run_dir / "summary.json").is_file():
        print(f"{run_dir}: the previous attempt stopped before its first checkpoint; starting afresh")
        return None
    previous = validate(read_yaml(saved), str(saved))
    diff = config_diff(previous, cfg, ignore=("train.epochs",))
    if diff:
        raise ConfigError(
            f"{run_dir}: this run exists with a different config (differs in: {', '.join(diff)}); "
            "choose another run.name, or rerun with the same config to resume"
        )
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("epochs_completed", 0) >= cfg.train.epochs:
            return summary
    return {}


def make_run_directory(run_dir: Path) -> None:
    """Create the run directory; a path that cannot be created is a user error naming it."""
    make_folder(run_dir / "checkpoints", "run.out_dir")


def weighting_for(cfg: Config, data: RunData) -> tuple[Weighting, dict]:
    """The strategy, from the training split's counts or from loss.stats_file."""
    counts = data.train_counts
    source = {"stats_source": "training split"}
    dataset_counts = DatasetCounts(counts.positive_pixels, counts.valid_pixels, counts.all_zero_pixels)
    if cfg.loss.stats_file:
        from seg.audit import read_stats_file

        path = expand_path(cfg.loss.stats_file)
        dataset_counts, sha256 = read_stats_file(path, list(cfg.data.classes))
        source = {"stats_source": str(path), "stats_sha256": sha256}
    weighting = build_weighting(
        cfg.loss.weighting,
        dataset_counts,
        cfg.data.mask_format,
        cfg.loss.negatives,
        tuple(cfg.loss.clamp),
        cfg.loss.ema,
    )
    weighting.all_reduce = torch.distributed.is_available() and torch.distributed.is_initialized()
    return weighting, source


def _loader(dataset, batch_size: int, shuffle: bool, workers: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=pad_collate,
        generator=generator,
        drop_last=shuffle,
        persistent_workers=False,
    )


def _better(value: float | None, best: float) -> bool:
    return value is not None and not math.isnan(value) and value > best


def fit(cfg: Config, progress: bool = True) -> dict:
    """Train (or resume, or report a finished run) and return summary.json's content."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "torchrun with several processes: multi-process (DDP) training is not implemented yet; "
            "run python scripts/train.py (one process) instead"
        )
    data = prepare_data(cfg, progress=progress)
    cfg = replace(cfg, data={"val_stems": data.val_stems})
    device = resolve_device(cfg.train.device)
    run_dir = run_directory(cfg)
    resume = check_resume(cfg, run_dir)
    if resume:
        print(f"{run_dir}: already trained for {resume['epochs_completed']} epochs; summary.json holds the results")
        return resume
    weighting, stats_source = weighting_for(cfg, data)
    loaders = Loaders.build(cfg, data)
    seed_everything(cfg.run.seed)
    model = build_model(cfg.model.arch, cfg.model.encoder, cfg.model.encoder_weights, cfg.num_classes)
    existed = run_dir.is_dir()
    make_run_directory(run_dir)
    (run_dir / FAILED).unlink(missing_ok=True)
    try:
        return _train(cfg, loaders, model, weighting, stats_source, device, run_dir, progress)
    except BaseException as err:
        if not (existed and isinstance(err, ConfigError)):  # a refused resume leaves the run as it was
            write_text_atomic(run_dir / FAILED, "".join(traceback.format_exception(err)))
        raise


@dataclass
class Loaders:
    """The datasets and loaders of a run, and the steps per epoch (checked before anything is written)."""

    train_set: SegmentationDataset
    val_set: SegmentationDataset
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    steps_per_epoch: int

    @classmethod
    def build(cls, cfg: Config, data: RunData) -> Loaders:
        train_set, val_set = build_datasets(cfg, data, expand_path(cfg.run.out_dir) / ".cache" / "weightmaps")
        train_loader = _loader(train_set, cfg.train.batch_size, True, cfg.data.num_workers, cfg.run.seed)
        val_loader = _loader(val_set, cfg.train.batch_size, False, cfg.data.num_workers, 0)
        steps = (
            len(train_loader)
            if cfg.train.max_steps_per_epoch is None
            else min(len(train_loader), cfg.train.max_steps_per_epoch)
        )
        if steps == 0:
            raise ConfigError(
                f"train.batch_size: {cfg.train.batch_size} is larger than the {len(train_set)} "
                "training items per epoch (drop_last); lower it or raise data.samples_per_epoch"
            )
        return cls(train_set, val_set, train_loader, val_loader, steps)


def _train(
    cfg: Config,
    loaders: Loaders,
    model: torch.nn.Module,
    weighting: Weighting,
    stats_source: dict,
    device: torch.device,
    run_dir: Path,
    progress: bool,
) -> dict:
    train_set, val_set, train_loader, val_loader = loaders.train_set, loaders.val_set, loaders.train, loaders.val
    steps_per_epoch = loaders.steps_per_epoch
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weighting.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    names = list(cfg.data.classes)
    state = {"epoch": 0, "best_dice": -math.inf, "best_epoch": None, "epoch_times": []}
    last_path, best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    saved = checkpoint.load(last_path, device) if last_path.is_file() else None
    if saved is None:
        lr_schedule = schedule.first_segment(cfg.train.epochs, cfg.train.lr)
        scheduler = schedule.cosine(optimizer, lr_schedule[0], steps_per_epoch)
    else:
        checkpoint.load_model_state(model, saved["model"], last_path)
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        lr_schedule, scheduler = schedule.resume_schedule(
            optimizer, saved, state["epoch"], cfg.train.epochs, steps_per_epoch, cfg.run.name
        )
        weighting.previous = saved.get("weighting_previous")
        print(f"resuming {run_dir.name} from epoch {state['epoch']}")
    save_config(cfg, run_dir / "config.yaml")
    if saved is not None and state["epoch"] >= cfg.train.epochs:  # killed after last.pt, before summary.json
        if "summary" not in saved:
            raise ConfigError(
                f"{last_path}: written by an older seg without the run summary; nothing left to "
                "train at this train.epochs: raise it to continue, or train a new run"
            )
        return _finish(cfg, json.loads(saved["summary"]), run_dir, device, tracker=None)
    truncate_metrics(run_dir / "metrics.jsonl", state["epoch"])
    tracker = Tracker(
        run_dir,
        cfg.logging.wandb.mode,
        cfg.logging.wandb.project,
        cfg.logging.wandb.group,
        cfg.run.name,
        config_to_dict(cfg) | {"provenance": provenance(str(device))},
        tags=[cfg.loss.weighting],
    )
    options = StepOptions(
        device,
        cfg.loss.apply_as,
        cfg.loss.normalize,
        cfg.train.amp,
        cfg.train.channels_last,
        cfg.train.max_steps_per_epoch,
        progress,
    )
    summary = None
    for epoch in range(state["epoch"] + 1, cfg.train.epochs + 1):
        start = time.perf_counter()
        train_set.set_epoch(epoch)
        train_loader.generator.manual_seed(cfg.run.seed * 100_003 + epoch)
        try:
            train = train_one_epoch(
                model,
                train_loader,
                optimizer,
                scheduler,
                weighting,
                options,
                desc=f"epoch {epoch}/{cfg.train.epochs} train",
            )
        except TrainingDiverged as err:
            tracker.finish()
            raise _diverged(epoch, f"step {err.step} of {steps_per_epoch}", state, last_path) from None
        if not all_finite(model):
            tracker.finish()
            raise _diverged(
                epoch,
                f"step {steps_per_epoch} of {steps_per_epoch}, where the weights became non-finite",
                state,
                last_path,
            )
        effective = effective_weights(train["sums"], len(names))
        evaluator = Evaluator.from_config(cfg.metrics, len(names), device, log_q(effective))
        val_loss = evaluate(model, val_loader, evaluator, options, desc=f"epoch {epoch}/{cfg.train.epochs} val")
        val = evaluator.compute(names)
        seconds = time.perf_counter() - start
        state["epoch_times"] = state.get("epoch_times", []) + [seconds]
        mean_weight = float(train["sums"].mean_applied_weight()) if train["sums"] is not None else 1.0
        row = epoch_row(epoch, train, val_loss, val, names, effective, mean_weight, scheduler.get_last_lr()[0], seconds)
        append_metrics(run_dir / "metrics.jsonl", row)
        tracker.log(row, step=epoch)
        print(
            f"epoch {epoch}/{cfg.train.epochs}: train/loss {train['loss']:.4f}  val/loss {val_loss:.4f}  "
            f"val/dice {_fmt(val['dice'])}  val/iou {_fmt(val['iou'])}  ({seconds:.1f}s)"
        )
        state["epoch"] = epoch
        if _better(val["dice"], state["best_dice"]) or state["best_epoch"] is None:
            state["best_dice"], state["best_epoch"] = val["dice"] if val["dice"] is not None else -math.inf, epoch
            checkpoint.save_atomic(
                {
                    "model": model.state_dict(),
                    "config": config_to_dict(cfg),
                    "epoch": epoch,
                    "effective_pos_weight": effective,
                },
                best_path,
            )
        summary = _summary(cfg, weighting, effective, train, val, state, stats_source, lr_schedule)
        checkpoint.save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
                "config": config_to_dict(cfg),
                "weighting_previous": weighting.previous,
                "effective_pos_weight": effective,
                "lr_schedule": lr_schedule,
                "summary": json_text(summary, indent=None),
            },
            last_path,
        )
        if cfg.logging.wandb.log_images:
            tracker.log_overlays(
                "val/examples",
                *overlay_examples(model, val_set, cfg.logging.wandb.log_images, options, log_q(effective)),
                names,
                step=epoch,
            )
    return _finish(cfg, summary, run_dir, device, tracker)


def _diverged(epoch: int, where: str, state: dict, last_path: Path) -> TrainingDiverged:
    good = (
        f"last good checkpoint: {last_path} (epoch {state['epoch']})"
        if state["epoch"] and last_path.is_file()
        else "no checkpoint was written"
    )
    return TrainingDiverged(
        f"training diverged: non-finite loss in epoch {epoch}, {where}; {good}. "
        "Lower train.lr (or check the data and loss.clamp)"
    )


def _finish(cfg: Config, summary: dict, run_dir: Path, device: torch.device, tracker: Tracker | None) -> dict:
    """Write summary.json (strict JSON, with provenance) and close the W&B run."""
    summary = strict(summary) | {"provenance": provenance(str(device))}
    write_json_atomic(run_dir / "summary.json", summary)
    if tracker is None:
        tracker = Tracker(
            run_dir,
            cfg.logging.wandb.mode,
            cfg.logging.wandb.project,
            cfg.logging.wandb.group,
            cfg.run.name,
            config_to_dict(cfg) | {"provenance": summary["provenance"]},
            tags=[cfg.loss.weighting],
        )
    tracker.summary(
        {
            key: summary[key]
            for key in (
                "best_epoch",
                "weighting",
                "pos_weight",
                "effective_pos_weight",
                "mean_applied_weight",
                "weight_map_stats",
            )
            if key in summary
        }
        | {"val/dice": summary["val"]["dice"], "val/iou": summary["val"]["iou"]}
    )
    best_path = run_dir / "checkpoints" / "best.pt"
    if best_path.is_file():
        tracker.log_file_artifact(best_path, f"{cfg.run.name}-best", "model")
    tracker.finish()
    return summary


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


def _summary(
    cfg: Config,
    weighting: Weighting,
    effective: list[float],
    train: dict,
    val: dict,
    state: dict,
    stats_source: dict,
    lr_schedule: list[dict],
) -> dict:
    """summary.json's content after the epoch just finished (provenance is added when it is written)."""
    summary = {
        "best_epoch": state["best_epoch"],
        "epochs_completed": state["epoch"],
        "weighting": cfg.loss.weighting,
        "apply_as": cfg.loss.apply_as,
        "normalize": cfg.loss.normalize,
        "negatives": cfg.loss.negatives,
        "pos_weight": weighting.reported_pos_weight(),
        "effective_pos_weight": effective,
        "mean_applied_weight": float(train["sums"].mean_applied_weight()) if train["sums"] is not None else 1.0,
        "val": val,
        "train": {"loss": train["loss"], "dice": train["dice"]},
        "wall_time_per_epoch_s": float(np.mean(state["epoch_times"])) if state.get("epoch_times") else None,
        "lr_schedule": lr_schedule,
        **stats_source,
    }
    if cfg.loss.weighting == "per_batch":
        summary["pos_weight"] = train["mean_channel_weight"]
    if weighting.kind in ("class_map", "border_map"):
        mean = float(train["sums"].mean_applied_weight())
        summary["weight_map_stats"] = {name: {"mean": mean, "max": train["map_max"]} for name in cfg.data.classes}
        summary["class_weights"] = [float(w) for w in weighting.class_weights.cpu()]
    return summary
