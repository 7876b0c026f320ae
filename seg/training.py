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
from typing import Any

import numpy as np
import torch

from seg import checkpoint, schedule
from seg.config import Config, ConfigError, config_to_dict, expand_path, replace, save_config
from seg.data.counts import read_mask_stats
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.engine import (
    NonFiniteLoss,
    StepOptions,
    all_finite,
    effective_weights,
    epoch_row,
    evaluate,
    overlay_examples,
    train_one_epoch,
)
from seg.files import json_text, write_text_atomic
from seg.losses import Criterion
from seg.models import build_model
from seg.provenance import provenance
from seg.run_data import RunData, build_datasets, prepare_data, structure_settings
from seg.run_files import (
    FAILED,
    build_summary,
    check_resume,
    dice_curve,
    diverged,
    finish,
    load_criterion_state,
    make_run_directory,
    open_tracker,
    run_directory,
)
from seg.scoring.thresholds import log_q
from seg.scoring.validation import Evaluator
from seg.tracking import append_metrics, truncate_metrics
from seg.weighting.registry import build_strategy, check_config


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


def build_criterion(cfg: Config, data: RunData) -> tuple[Criterion, dict]:
    """The loss of the run, its strategy built from the training split's counts or from loss.stats_file;
    and where the counts came from (summary.json's stats_source, stats_sha256)."""
    counts = data.train_counts
    source = {"stats_source": "training split"}
    if cfg.loss.stats_file:
        path = expand_path(cfg.loss.stats_file)
        stats = read_mask_stats(path, list(cfg.data.classes))
        counts, source = stats.counts, {"stats_source": str(path), "stats_sha256": stats.sha256}
    strategy = build_strategy(cfg.loss, counts, data.spec)
    return Criterion(strategy, cfg.loss.apply_as, cfg.loss.normalize, cfg.loss.terms), source


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
    check_config(cfg)
    data = prepare_data(cfg, progress=progress)
    cfg = replace(cfg, data={"val_stems": data.val_stems, "test_stems": data.test_stems})
    device = resolve_device(cfg.train.device)
    run_dir = run_directory(cfg)
    resume = check_resume(cfg, run_dir)
    if resume:
        print(f"{run_dir}: already trained for {resume['epochs_completed']} epochs; summary.json holds the results")
        return resume
    criterion, stats_source = build_criterion(cfg, data)
    loaders = Loaders.build(cfg, data)
    seed_everything(cfg.run.seed)
    model = build_model(cfg.model.arch, cfg.model.encoder, cfg.model.encoder_weights, cfg.num_classes)
    existed = run_dir.is_dir()
    make_run_directory(run_dir)
    (run_dir / FAILED).unlink(missing_ok=True)
    try:
        return _train(cfg, loaders, model, criterion, stats_source, device, run_dir, progress)
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
    criterion: Criterion,
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
    criterion = criterion.to(device)
    name = criterion.strategy.name
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    names = list(cfg.data.classes)
    state: dict[str, Any] = {"epoch": 0, "best_dice": -math.inf, "best_epoch": None, "epoch_times": []}
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
        load_criterion_state(criterion, saved)
        print(f"resuming {run_dir.name} from epoch {state['epoch']}")
    save_config(cfg, run_dir / "config.yaml")
    if saved is not None and state["epoch"] >= cfg.train.epochs:  # killed after last.pt, before summary.json
        if "summary" not in saved:
            raise ConfigError(
                f"{last_path}: written by an older seg without the run summary; nothing left to "
                "train at this train.epochs: raise it to continue, or train a new run"
            )
        return finish(cfg, json.loads(saved["summary"]), run_dir, device, None, name)
    truncate_metrics(run_dir / "metrics.jsonl", state["epoch"])
    tracker = open_tracker(cfg, run_dir, provenance(str(device)), name)
    options = StepOptions(
        device,
        amp=cfg.train.amp,
        channels_last=cfg.train.channels_last,
        max_steps=cfg.train.max_steps_per_epoch,
        progress=progress,
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
                criterion,
                options,
                desc=f"epoch {epoch}/{cfg.train.epochs} train",
            )
        except NonFiniteLoss as err:
            tracker.finish()
            raise diverged(epoch, f"step {err.step} of {steps_per_epoch}", state, last_path) from None
        if not all_finite(model):
            tracker.finish()
            raise diverged(
                epoch,
                f"step {steps_per_epoch} of {steps_per_epoch}, where the weights became non-finite",
                state,
                last_path,
            )
        effective = effective_weights(train["sums"], len(names))
        final = structure_settings(cfg, val_set.samples) if epoch == cfg.train.epochs else None
        evaluator = Evaluator.from_config(cfg.metrics, len(names), device, log_q(effective), structure=final)
        val_loss = evaluate(model, val_loader, evaluator, options, desc=f"epoch {epoch}/{cfg.train.epochs} val")
        val = evaluator.compute(names)
        seconds = time.perf_counter() - start
        state["epoch_times"] = state.get("epoch_times", []) + [seconds]
        state["val_curve"] = dice_curve(state.get("val_curve"), val)
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
        summary = build_summary(cfg, criterion, effective, train, val, state, stats_source, lr_schedule)
        checkpoint.save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
                "config": config_to_dict(cfg),
                "criterion": criterion.state_dict(),
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
    assert summary is not None  # the loop ran: train.epochs > state["epoch"] here
    return finish(cfg, summary, run_dir, device, tracker, name)


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"
