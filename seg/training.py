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
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from seg import checkpoint, schedule
from seg.config import Config, ConfigError, config_to_dict, expand_path, replace, save_config
from seg.data.counts import read_mask_stats
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.shards import GlobalBatchShard, validation_batches
from seg.distributed import Job, broadcast_buffers, check_global_batch, data_parallel, global_sum, session
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
    validated_epochs,
)
from seg.scoring.thresholds import log_q
from seg.scoring.validation import Evaluator
from seg.tracking import STEP, STEP_PREFIX, Tracker, append_metrics, truncate_metrics
from seg.weighting.registry import build_strategy, check_config


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_criterion(cfg: Config, data: RunData, world: int = 1) -> tuple[Criterion, dict]:
    """The loss of the run, its strategy built from the training split's counts or from loss.stats_file;
    and where the counts came from (summary.json's stats_source, stats_sha256). With several processes
    the loss is the global batch's (its sums are summed over the processes)."""
    counts = data.train_counts
    source = {"stats_source": "training split"}
    if cfg.loss.stats_file:
        path = expand_path(cfg.loss.stats_file)
        stats = read_mask_stats(path, list(cfg.data.classes))
        counts, source = stats.counts, {"stats_source": str(path), "stats_sha256": stats.sha256}
    strategy = build_strategy(cfg.loss, counts, data.spec)
    reduce = global_sum if world > 1 else None
    return Criterion(strategy, cfg.loss.apply_as, cfg.loss.normalize, cfg.loss.terms, reduce), source


def _better(value: float | None, best: float) -> bool:
    return value is not None and not math.isnan(value) and value > best


def fit(cfg: Config, progress: bool = True) -> dict:
    """Train (or resume, or report a finished run) and return summary.json's content.

    Under torchrun (several processes) every process calls it: rank 0 checks and counts the data and
    alone reads and writes the run directory; the model trains with DistributedDataParallel.
    """
    with session(cfg.train.device, cfg.train.dist_backend) as job:
        return _fit(cfg, job, progress)


@dataclass
class Plan:
    """What rank 0 found before training: the config with its splits, the data, where the run goes,
    and the summary of a run that is already finished (None otherwise)."""

    cfg: Config
    data: RunData
    run_dir: Path
    finished: dict | None


def _plan(cfg: Config, world: int, progress: bool) -> Plan:
    check_global_batch(cfg.train.batch_size, world)
    check_config(cfg)
    data = prepare_data(cfg, progress=progress)
    cfg = replace(cfg, data={"val_stems": data.val_stems, "test_stems": data.test_stems})
    run_dir = run_directory(cfg)
    resume = check_resume(cfg, run_dir)
    if resume:
        print(f"{run_dir}: already trained for {resume['epochs_completed']} epochs; summary.json holds the results")
    return Plan(cfg, data, run_dir, resume or None)


def _fit(cfg: Config, job: Job, progress: bool) -> dict:
    plan = job.share(lambda: _plan(cfg, job.world, progress))
    if plan.finished is not None:
        return plan.finished
    cfg, data, run_dir = plan.cfg, plan.data, plan.run_dir

    def build() -> tuple[Criterion, dict, Loaders, torch.nn.Module]:
        criterion, stats_source = build_criterion(cfg, data, job.world)
        loaders = Loaders.build(cfg, data, job)
        seed_everything(cfg.run.seed)
        model = build_model(cfg.model.arch, cfg.model.encoder, cfg.model.encoder_weights, cfg.num_classes)
        return criterion, stats_source, loaders, model

    criterion, stats_source, loaders, model = job.main_first(build)
    existed = job.share(lambda: _open_run_directory(run_dir))
    try:
        return _train(cfg, loaders, model, criterion, stats_source, job, run_dir, progress and job.main)
    except BaseException as err:
        # a refused resume leaves the run as it was; only rank 0 writes
        if job.main and not (existed and isinstance(err, ConfigError)):
            write_text_atomic(run_dir / FAILED, "".join(traceback.format_exception(err)))
        raise


def _open_run_directory(run_dir: Path) -> bool:
    """Create the run directory and clear its FAILED marker; whether it existed."""
    existed = run_dir.is_dir()
    make_run_directory(run_dir)
    (run_dir / FAILED).unlink(missing_ok=True)
    return existed


@dataclass
class Loaders:
    """The datasets and loaders of a run (this process's share), and the steps per epoch (checked before
    anything is written; the same for any number of processes)."""

    train_set: SegmentationDataset
    val_set: SegmentationDataset
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    shard: GlobalBatchShard
    steps_per_epoch: int

    @classmethod
    def build(cls, cfg: Config, data: RunData, job: Job) -> Loaders:
        train_set, val_set = build_datasets(cfg, data, expand_path(cfg.run.out_dir) / ".cache" / "weightmaps")
        batch, workers = cfg.train.batch_size, cfg.data.num_workers
        pin = job.device.type == "cuda"  # page-locked batches: the non_blocking copies to the GPU overlap the step
        shard = GlobalBatchShard(len(train_set), batch, cfg.run.seed, job.rank, job.world)
        train_loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=shard.per_rank,
            sampler=shard,
            num_workers=workers,
            collate_fn=pad_collate,
            generator=torch.Generator().manual_seed(cfg.run.seed),  # the workers' base seed, not the global RNG
            drop_last=True,
            pin_memory=pin,
        )
        val_loader = torch.utils.data.DataLoader(
            val_set,
            batch_sampler=validation_batches(len(val_set), batch, job.rank, job.world),
            num_workers=workers,
            collate_fn=pad_collate,
            pin_memory=pin,
        )
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
        return cls(train_set, val_set, train_loader, val_loader, shard, steps)


def _train(
    cfg: Config,
    loaders: Loaders,
    model: torch.nn.Module,
    criterion: Criterion,
    stats_source: dict,
    job: Job,
    run_dir: Path,
    progress: bool,
) -> dict:
    train_set, val_set, train_loader, val_loader = loaders.train_set, loaders.val_set, loaders.train, loaders.val
    steps_per_epoch, device = loaders.steps_per_epoch, job.device
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = data_parallel(model, job, cfg.train.sync_batchnorm)  # what trains; `model` is what is saved
    model = net.module if isinstance(net, DistributedDataParallel) else net
    criterion = criterion.to(device)
    name = criterion.strategy.name
    # train.compile: the training step's model and/or loss (compiled in the first step; validation runs eagerly)
    step_net = cast(torch.nn.Module, torch.compile(net)) if "model" in cfg.train.compile else net
    step_loss = cast(Criterion, torch.compile(criterion)) if "loss" in cfg.train.compile else criterion
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    names = list(cfg.data.classes)
    state: dict[str, Any] = {"epoch": 0, "best_dice": -math.inf, "best_epoch": None, "epoch_times": []}
    last_path, best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    saved = job.share(lambda: checkpoint.load(last_path) if last_path.is_file() else None)  # rank 0 reads it
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
        if job.main:
            print(f"resuming {run_dir.name} from epoch {state['epoch']}")
    if job.main:
        save_config(cfg, run_dir / "config.yaml")
    if saved is not None and state["epoch"] >= cfg.train.epochs:  # killed after last.pt, before summary.json
        if "summary" not in saved:
            raise ConfigError(
                f"{last_path}: written by an older seg without the run summary; nothing left to "
                "train at this train.epochs: raise it to continue, or train a new run"
            )
        summary = json.loads(saved["summary"])
        return finish(cfg, summary, run_dir, device, None, name) if job.main else summary
    tracker = _tracker(cfg, job, run_dir, name, state["epoch"])
    options = StepOptions(
        device,
        amp=cfg.train.amp,
        amp_cpu=cfg.train.amp_cpu,
        channels_last=cfg.train.channels_last,
        max_steps=cfg.train.max_steps_per_epoch,
        progress=progress,
        log_every=cfg.logging.log_every,
    )
    one_class = cfg.data.mask_format == "index"
    summary = None
    for epoch in range(state["epoch"] + 1, cfg.train.epochs + 1):
        start = time.perf_counter()
        options.on_log = step_logger(tracker, (epoch - 1) * steps_per_epoch)
        train_set.set_epoch(epoch)
        loaders.shard.set_epoch(epoch)
        try:
            train = train_one_epoch(
                step_net,
                train_loader,
                optimizer,
                scheduler,
                step_loss,
                options,
                desc=f"epoch {epoch}/{cfg.train.epochs} train",
            )
        except NonFiniteLoss as err:
            tracker.finish()
            raise diverged(epoch, f"step {err.step} of {steps_per_epoch}", state, last_path) from None
        if not all_finite(model):  # the same on every rank: DDP keeps the weights equal
            tracker.finish()
            raise diverged(
                epoch,
                f"step {steps_per_epoch} of {steps_per_epoch}, where the weights became non-finite",
                state,
                last_path,
            )
        broadcast_buffers(model)  # every rank evaluates the model rank 0 saves (its BatchNorm statistics)
        effective = effective_weights(train["sums"], len(names))
        validated = epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs
        val_loss, val = None, None
        if validated:
            final = structure_settings(cfg, val_set.samples) if epoch == cfg.train.epochs else None
            evaluator = Evaluator.from_config(cfg.metrics, len(names), device, log_q(effective), structure=final)
            val_loss = evaluate(model, val_loader, evaluator, options, desc=f"epoch {epoch}/{cfg.train.epochs} val")
            val = evaluator.compute(names)
        seconds = time.perf_counter() - start
        state["epoch_times"] = state.get("epoch_times", []) + [seconds]
        mean_weight = float(train["sums"].mean_applied_weight()) if train["sums"] is not None else 1.0
        row = epoch_row(epoch, train, val_loss, val, names, effective, mean_weight, scheduler.get_last_lr()[0], seconds)
        state["epoch"] = epoch
        improved = False
        if val is not None:
            state["val_epochs"] = validated_epochs(state) + [epoch]
            state["val_curve"] = dice_curve(state.get("val_curve"), val)
            improved = _better(val["dice"], state["best_dice"]) or state["best_epoch"] is None
            if improved:
                state["best_dice"], state["best_epoch"] = val["dice"] if val["dice"] is not None else -math.inf, epoch
            summary = build_summary(cfg, criterion, effective, train, val, state, stats_source, lr_schedule)
        if not job.main:
            continue
        append_metrics(run_dir / "metrics.jsonl", row)
        tracker.log(row)  # epoch is the step metric of these keys (define_metric)
        scores = (
            f"val/loss {val_loss:.4f}  val/dice {_fmt(val['dice'])}  val/iou {_fmt(val['iou'])}"
            if val is not None
            else f"(validation every {cfg.train.val_every} epochs)"
        )
        print(f"epoch {epoch}/{cfg.train.epochs}: train/loss {train['loss']:.4f}  {scores}  ({seconds:.1f}s)")
        if improved:
            checkpoint.save_atomic(
                {
                    "model": model.state_dict(),
                    "config": config_to_dict(cfg),
                    "epoch": epoch,
                    "effective_pos_weight": effective,
                },
                best_path,
            )
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
                **({"summary": json_text(summary, indent=None)} if summary is not None else {}),
            },
            last_path,
        )
        if cfg.logging.wandb.log_images and validated:
            tracker.log_overlays(
                "val/examples",
                *overlay_examples(model, val_set, cfg.logging.wandb.log_images, options, log_q(effective), one_class),
                names,
                index=one_class,
                extra={"epoch": epoch},
            )
    assert summary is not None  # the loop ran: train.epochs > state["epoch"] here
    return finish(cfg, summary, run_dir, device, tracker, name) if job.main else summary


def _tracker(cfg: Config, job: Job, run_dir: Path, strategy_name: str, epoch: int) -> Tracker:
    """Rank 0's W&B run, and its metrics.jsonl cut back to the checkpoint's ``epoch``; nothing on the others."""
    if not job.main:
        return Tracker(run_dir, "disabled", cfg.logging.wandb.project, None, cfg.run.name, {})
    truncate_metrics(run_dir / "metrics.jsonl", epoch)
    return open_tracker(cfg, run_dir, provenance(str(job.device)), strategy_name)


def step_logger(tracker: Tracker, steps_before: int) -> Callable[[int, dict], None] | None:
    """The engine's per-step log for an epoch after ``steps_before`` steps: W&B rows against trainer/step;
    None (no interval reads at all) when W&B is off."""
    if tracker.run is None:
        return None

    def log(step: int, values: dict) -> None:
        tracker.log({STEP: steps_before + step} | {STEP_PREFIX + key: value for key, value in values.items()})

    return log


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"
