"""A run directory between attempts: where it is, whether to resume, the FAILED marker, the criterion's
checkpointed state, summary.json and the W&B run that carries it (used by :func:`seg.training.fit`)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from seg.config import Config, ConfigError, config_diff, config_to_dict, expand_path, read_run_config
from seg.errors import TrainingDiverged
from seg.files import make_folder, strict, write_json_atomic
from seg.losses import Criterion
from seg.provenance import provenance
from seg.results import RunSummary
from seg.tracking import Tracker, read_metrics

FAILED = "FAILED"


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
    previous = read_run_config(saved)
    # what a run logs where (logging.*) does not change what it trains: it may differ on resume
    diff = [key for key in config_diff(previous, cfg, ignore=("train.epochs",)) if not key.startswith("logging.")]
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


def load_criterion_state(criterion: Criterion, saved: dict) -> None:
    """Load last.pt's ``criterion`` (the criterion's state_dict: the strategy's buffers) into ``criterion``.

    Compatibility: last.pt files written before the criterion was saved hold ``weighting_previous``
    instead (the per_batch EMA value, or None for the other strategies); a value is loaded as the
    per_batch EMA state (buffers ``previous`` and ``has_previous``).
    """
    if "criterion" in saved:
        criterion.load_state_dict(saved["criterion"])
    elif saved.get("weighting_previous") is not None:
        state = criterion.state_dict()
        state["strategy.previous"] = saved["weighting_previous"]
        state["strategy.has_previous"] = torch.ones((), dtype=torch.bool)
        criterion.load_state_dict(state)


def open_tracker(cfg: Config, run_dir: Path, run_provenance: dict, strategy_name: str) -> Tracker:
    """The run's W&B tracker (logging.wandb; job_type train), tagged with the weighting strategy's name,
    its step metrics defined."""
    wandb = cfg.logging.wandb
    config = config_to_dict(cfg) | {"provenance": run_provenance, "config_hash": config_hash(cfg)}
    tracker = Tracker(run_dir, wandb.mode, wandb.project, cfg.wandb_group, cfg.wandb_name, config, [strategy_name])
    tracker.define_training_metrics()
    return tracker


def config_hash(cfg: Config) -> str:
    """The first 16 hex digits of the sha256 of the config's canonical JSON (which config a model came from)."""
    return hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def model_artifact(name: str) -> str:
    """The W&B model artifact of run ``name`` (W&B allows letters, digits, '-', '_' and '.' in artifact names)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + "-model"


def log_checkpoints(cfg: Config, summary: dict, run_dir: Path, tracker: Tracker) -> None:
    """best.pt and last.pt as versions of the run's model artifact (aliases ``best``, ``latest``), with the epoch,
    its validation Dice, the config hash and the commit as metadata. Once, at the end (not per epoch: disk)."""
    folder = run_dir / "checkpoints"
    common = {"config_hash": config_hash(cfg), "commit": summary["provenance"].get("commit"), "run": cfg.run.name}
    rows = read_metrics(run_dir / "metrics.jsonl")
    best_dice = next((row.get("val/dice") for row in rows if row.get("epoch") == summary["best_epoch"]), None)
    files = {
        "best.pt": (folder / "best.pt", ["best"], common | {"epoch": summary["best_epoch"], "val_dice": best_dice}),
        "last.pt": (
            folder / "last.pt",
            ["latest"],
            common | {"epoch": summary["epochs_completed"], "val_dice": summary["val"]["dice"]},
        ),
    }
    tracker.log_model(model_artifact(cfg.run.name), {k: v for k, v in files.items() if v[0].is_file()})


def dice_curve(curve: dict[str, list] | None, val: dict) -> dict[str, list]:
    """``curve`` (policy -> macro validation Dice per epoch) with this epoch's ``val`` appended."""
    curve = {policy: list(values) for policy, values in (curve or {}).items()}
    for policy, block in val.get("by_threshold", {}).items():
        curve.setdefault(policy, []).append(block["dice"])
    return curve


def validated_epochs(state: dict) -> list[int]:
    """The epochs of the validation curve so far (checkpoints from before train.val_every: every epoch)."""
    if "val_epochs" in state:
        return list(state["val_epochs"])
    curve: list = next(iter((state.get("val_curve") or {}).values()), [])
    return list(range(1, len(curve) + 1))


def build_summary(
    cfg: Config,
    criterion: Criterion,
    effective: list[float],
    train: dict,
    val: dict,
    state: dict,
    stats_source: dict,
    lr_schedule: list[dict],
) -> dict:
    """summary.json's content after the epoch just finished (provenance is added when it is written).

    The strategy reports its own keys: ``pos_weight``, and for maps ``weight_map_stats`` and
    ``class_weights`` (at the end).
    """
    strategy = criterion.strategy
    reported = strategy.report(train, list(cfg.data.classes))
    return {
        "best_epoch": state["best_epoch"],
        "epochs_completed": state["epoch"],
        "weighting": strategy.name,
        "apply_as": criterion.apply_as,
        "normalize": criterion.normalize,
        "negatives": cfg.loss.negatives,
        "pos_weight": reported["pos_weight"],
        "effective_pos_weight": effective,
        "mean_applied_weight": float(train["sums"].mean_applied_weight()) if train["sums"] is not None else 1.0,
        "val": val,
        "train": {"loss": train["loss"], "dice": train["dice"]},
        "wall_time_per_epoch_s": float(np.mean(state["epoch_times"])) if state.get("epoch_times") else None,
        "lr_schedule": lr_schedule,
        "val_dice_curve": state.get("val_curve"),
        "val_dice_epochs": state.get("val_epochs"),
        **stats_source,
        **{key: value for key, value in reported.items() if key != "pos_weight"},
        "loss_terms": [{"name": t.name, "weight": t.weight, **t.parameters()} for t in cfg.loss.terms],
        "sampling": {
            "sampling": "foreground",
            "foreground_fraction": cfg.data.foreground_fraction,
            "foreground_channel": cfg.data.foreground_channel,
        }
        if cfg.data.sampling == "foreground"
        else None,
    }


def finish(
    cfg: Config, summary: dict, run_dir: Path, device: torch.device, tracker: Tracker | None, strategy_name: str
) -> dict:
    """Write summary.json (strict JSON, with provenance) and close the W&B run (opened here if ``tracker`` is None)."""
    path = run_dir / "summary.json"
    summary = RunSummary.from_dict(strict(summary) | {"provenance": provenance(str(device))}, path).to_dict()
    write_json_atomic(path, summary)
    if tracker is None:
        tracker = open_tracker(cfg, run_dir, summary["provenance"], strategy_name)
    tracker.summary(  # val/dice stays the best epoch's (define_metric: max); the last epoch's is final/val/dice
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
        | {"final/val/dice": summary["val"]["dice"], "final/val/iou": summary["val"]["iou"]}
    )
    log_checkpoints(cfg, summary, run_dir, tracker)
    tracker.finish()
    return summary


def diverged(epoch: int, where: str, state: dict, last_path: Path) -> TrainingDiverged:
    """The TrainingDiverged error for a non-finite loss: where, and the last good checkpoint."""
    good = (
        f"last good checkpoint: {last_path} (epoch {state['epoch']})"
        if state["epoch"] and last_path.is_file()
        else "no checkpoint was written"
    )
    return TrainingDiverged(
        f"training diverged: non-finite loss in epoch {epoch}, {where}; {good}. "
        "Lower train.lr (or check the data and loss.clamp)"
    )
