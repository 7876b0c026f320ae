"""The training loop as a handful of verbs: train_one_epoch (train_step per batch), evaluate, overlay_examples.

Nothing in the per-step path (:func:`train_step`) synchronises with the host: losses, weight sums
and metric counts are accumulated as device tensors (:class:`EpochState`) and read once per epoch.
The finite-loss guard is the same: the step of the first non-finite loss is kept on the
device and read every ``StepOptions.check_every`` steps and at the end of the epoch; the
per-step log (``StepOptions.on_log``) reads the interval's means once every ``log_every`` steps.
Both reads happen in :func:`train_one_epoch`, between steps (tests/test_host_sync.py checks the
steps of every weighting strategy and loss term under CUDA's sync-debug mode, or its CPU stand-in).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.reading import read_image
from seg.distributed import all_reduce_counts, all_reduce_max, first_bad_step, world_size
from seg.errors import TrainingDiverged
from seg.losses import Criterion, WeightSums
from seg.scoring.metrics import confusion_counts, dice_score, to_float
from seg.scoring.validation import Evaluator


class NonFiniteLoss(TrainingDiverged):
    """A non-finite loss at ``step`` (1-based) of the epoch; the caller adds the epoch and the last good
    checkpoint to the message it shows."""

    def __init__(self, step: int) -> None:
        super().__init__(f"non-finite loss at step {step}")
        self.step = step


@dataclass
class StepOptions:
    """How a training step runs (plain values taken from the config at the edge)."""

    device: torch.device
    amp: bool = False  # bfloat16 autocast on CUDA
    amp_cpu: bool = False  # bfloat16 autocast on the CPU
    channels_last: bool = True
    max_steps: int | None = None
    progress: bool = True
    check_every: int = 50  # read the finite-loss flag every this many steps (one host sync each)
    log_every: int = 0  # call on_log every this many steps (0: never)
    on_log: Callable[[int, dict], None] | None = None  # (step of the epoch, {loss, weight: interval means; lr})


def to_device(batch: dict, options: StepOptions) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(options.device, non_blocking=True)
            if key == "image" and options.channels_last:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def autocast(options: StepOptions):
    """bfloat16 autocast of the model's forward: on CUDA with train.amp, on the CPU with train.amp_cpu (no
    GradScaler needed for bfloat16); the losses compute in float32 either way."""
    if (options.amp and options.device.type == "cuda") or (options.amp_cpu and options.device.type == "cpu"):
        return torch.autocast(device_type=options.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class EpochState:
    """What the steps of an epoch add up, as device tensors (read once per epoch, never in a step).

    loss_sum: the summed loss (float64); term_sum: each loss term's (float64 (T,)); counts: tp, fp, fn, tn
    per channel at 0.5 (int64 [C,4], None before the first step); sums: the :class:`WeightSums` (None
    before the first step); map_max: the largest map weight; channel_weight_sum: the summed (C,1,1)
    weights, flattened (per-channel strategies; else a () zero); first_bad: the step (1-based) of the first
    non-finite loss, -1 while none; interval: loss and mean applied weight summed since the last log
    (float64 (2,)); steps: the steps taken (a Python int).
    """

    loss_sum: torch.Tensor
    term_sum: torch.Tensor
    counts: torch.Tensor | None
    sums: WeightSums | None
    map_max: torch.Tensor
    channel_weight_sum: torch.Tensor
    first_bad: torch.Tensor
    interval: torch.Tensor
    steps: int = 0

    @classmethod
    def start(cls, device: torch.device, num_terms: int) -> EpochState:
        """Zeros on ``device`` for a criterion of ``num_terms`` terms (nothing seen: first_bad -1)."""
        return cls(
            loss_sum=torch.zeros((), device=device, dtype=torch.float64),
            term_sum=torch.zeros(num_terms, device=device, dtype=torch.float64),
            counts=None,
            sums=None,
            map_max=torch.zeros((), device=device),
            channel_weight_sum=torch.zeros((), device=device),
            first_bad=torch.full((), -1, device=device, dtype=torch.long),
            interval=torch.zeros(2, device=device, dtype=torch.float64),
        )


def _log_every(options: StepOptions) -> int:
    """Steps between two calls of ``options.on_log`` (0: no callback, nothing logged per interval)."""
    return options.log_every if options.on_log is not None else 0


def train_step(
    model: torch.nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    scheduler,
    criterion: Criterion,
    options: StepOptions,
    state: EpochState,
) -> torch.Tensor:
    """One optimisation step on ``batch`` (still on the host or already on the device), its values added
    to ``state``; returns the loss (detached, on the device). No host synchronisation: the finite-loss
    check and the interval log read ``state`` in :func:`train_one_epoch`, between steps."""
    batch = to_device(batch, options)
    with autocast(options):
        logits = model(batch["image"])
    loss, step_sums, weight = criterion(logits, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    with torch.no_grad():
        loss = loss.detach()
        bad = ~torch.isfinite(loss)
        state.first_bad = torch.where(bad & (state.first_bad < 0), state.steps + 1, state.first_bad)
        state.loss_sum += loss
        if criterion.last_terms is not None:
            state.term_sum += criterion.last_terms
        step_counts = confusion_counts(logits.detach().float(), batch["target"], batch["valid"]).sum(dim=0)
        state.counts = step_counts if state.counts is None else state.counts + step_counts
        state.sums = step_sums if state.sums is None else state.sums + step_sums
        if weight is not None and weight.dim() == 4:
            state.map_max = torch.maximum(state.map_max, weight.detach().amax())
        if weight is not None and weight.dim() == 3:
            state.channel_weight_sum = state.channel_weight_sum + weight.detach().flatten()
        if _log_every(options):
            state.interval += torch.stack([loss.double(), step_sums.mean_applied_weight().double()])
    state.steps += 1
    return loss


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    criterion: Criterion,
    options: StepOptions,
    desc: str = "train",
) -> dict:
    """One pass over ``loader`` (:func:`train_step` per batch), minimising ``criterion`` (its strategy on
    the device already); the finite-loss check every ``options.check_every`` steps and the interval log.

    Returns the mean loss, train Dice (macro, at 0.5), the WeightSums, the largest map weight,
    and the mean per-channel weight over the epoch (per-channel strategies; else None).
    """
    model.train()
    state = EpochState.start(options.device, len(criterion.terms))
    log_every = _log_every(options)
    total = len(loader) if options.max_steps is None else min(len(loader), options.max_steps)
    bar = tqdm(loader, total=total, desc=desc, leave=False, disable=not options.progress)
    for batch in bar:
        if state.steps == total:
            break
        if state.steps and state.steps % options.check_every == 0:
            raise_if_diverged(state.first_bad)
        train_step(model, batch, optimizer, scheduler, criterion, options, state)
        if log_every and state.steps % log_every == 0:
            _log_interval(options, state.steps, state.interval / log_every, scheduler.get_last_lr()[0])
            state.interval.zero_()
    bar.close()
    raise_if_diverged(state.first_bad)
    counts, sums, steps = state.counts, state.sums, state.steps
    if counts is None or sums is None:
        raise ValueError("train_one_epoch: the loader yielded no batch")
    # under DDP: sums over every rank's share of the global batches (one collective each, once per epoch)
    for summed in (state.loss_sum, state.term_sum, counts, state.channel_weight_sum, *sums.as_tuple()):
        all_reduce_counts(summed)
    all_reduce_max(state.map_max)
    shares = max(steps, 1) * world_size()  # every rank's value of each step (the global batch's loss)
    channel_weight_sum = state.channel_weight_sum
    return {
        "loss": float(state.loss_sum) / shares,
        "terms": dict(zip(criterion.term_names, (float(v) / shares for v in state.term_sum.cpu()), strict=True)),
        "dice": to_float(dice_score(counts[None].cpu(), "macro")),
        "sums": sums,
        "map_max": float(state.map_max),
        "steps": steps,
        "mean_channel_weight": [float(w) / shares for w in channel_weight_sum.flatten().cpu()]
        if channel_weight_sum.dim()
        else None,
    }


def _log_interval(options: StepOptions, step: int, means: torch.Tensor, lr: float) -> None:
    """Hand the interval's mean loss and applied weight to ``options.on_log`` (one host sync)."""
    assert options.on_log is not None
    loss, weight = means.tolist()
    options.on_log(step, {"loss": loss, "weight": weight, "lr": lr})


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, evaluator: Evaluator, options: StepOptions, desc: str = "val") -> float:
    """Run the model over ``loader`` into ``evaluator``; return the mean unweighted BCE over valid pixels.

    The validation loss is unweighted so that it compares across strategies.
    """
    model.eval()
    loss_sum = torch.zeros((), device=options.device, dtype=torch.float64)
    pixels = torch.zeros((), device=options.device, dtype=torch.float64)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not options.progress):
        batch = to_device(batch, options)
        with autocast(options):
            logits = model(batch["image"])
        logits = logits.float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["target"], reduction="none")
        loss_sum += (loss * batch["valid"]).sum()
        pixels += batch["valid"].sum() * logits.shape[1]
        evaluator.update(logits, batch["target"], batch["valid"], batch.get("index"))
    all_reduce_counts(loss_sum)  # under DDP: every rank's images
    all_reduce_counts(pixels)
    return float(loss_sum / pixels.clamp(min=1))


@torch.no_grad()
def overlay_examples(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    count: int,
    options: StepOptions,
    logit_threshold: torch.Tensor | float = 0.0,
    one_class: bool = False,
) -> tuple[list, list, list]:
    """Predictions for people to look at: the first ``count`` items of ``dataset`` as images uint8
    [H,W,3], truths and predictions uint8 [H,W,C] in {0,1} (logit > ``logit_threshold``).

    ``one_class`` (index masks: one class per pixel): each pixel's prediction is the one channel whose
    logit lies furthest above its threshold, or none when no channel is above.
    """
    model.eval()
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    if not items:
        return [], [], []
    batch = to_device(pad_collate(items), options)
    with autocast(options):
        logits = model(batch["image"]).float()
    threshold = logit_threshold.to(logits.device) if isinstance(logit_threshold, torch.Tensor) else logit_threshold
    margin = logits - threshold
    above = margin > 0
    if one_class:
        best = torch.nn.functional.one_hot(margin.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).bool()
        above = above & best
    preds = above.cpu().numpy().astype(np.uint8)
    images, truths, predictions = [], [], []
    for row, item in enumerate(items):
        image = read_image(dataset.samples[item["index"]].image)
        h, w = image.shape[:2]
        images.append(image)
        truths.append(item["target"].numpy().transpose(1, 2, 0)[:h, :w].astype(np.uint8))
        predictions.append(preds[row].transpose(1, 2, 0)[:h, :w])
    return images, truths, predictions


def epoch_row(
    epoch: int,
    train: dict,
    val_loss: float | None,
    val: dict | None,
    class_names: list[str],
    effective: list[float],
    mean_weight: float,
    lr: float,
    seconds: float,
) -> dict:
    """One metrics.jsonl row (at least: epoch, train/loss, val/loss, val/dice, val/iou, per channel). An epoch
    without validation (``val`` None: train.val_every) has the train, weights, lr and time keys only."""
    row = {
        "epoch": epoch,
        "train/loss": train["loss"],
        "train/dice": train["dice"],
        **(
            {f"train/loss/{name}": value for name, value in train["terms"].items()}
            if len(train.get("terms", {})) > 1
            else {}
        ),
    }
    if val is not None:
        row.update(_val_keys(val_loss, val, class_names))
    for name, q in zip(class_names, effective, strict=False):
        row[f"weights/effective_pos_weight/{name}"] = q
    row.update({"weights/mean_applied_weight": mean_weight, "lr": lr, "time/epoch_s": seconds})
    return row


def _val_keys(val_loss: float | None, val: dict, class_names: list[str]) -> dict:
    row = {"val/loss": val_loss, "val/dice": val["dice"], "val/iou": val["iou"]}
    for name in class_names:
        row[f"val/dice/{name}"] = val["per_channel"][name]["dice"]
        row[f"val/iou/{name}"] = val["per_channel"][name]["iou"]
    for policy, block in val.get("by_threshold", {}).items():
        row[f"val/{policy}/dice"] = block["dice"]
    structure = val.get("structure")  # the last epoch, with metrics.structure: the scores in [0, 1]
    for policy, block in (structure or {}).get("by_threshold", {}).items():
        for key in ("v_rand", "v_info", "ap"):
            if key in block["mean"]:
                row[f"val/{policy}/{key}"] = block["mean"][key]
    return row


def effective_weights(sums: WeightSums | None, num_channels: int) -> list[float]:
    if sums is None:
        return [1.0] * num_channels
    return [float(q) for q in sums.effective_pos_weight().cpu()]


def raise_if_diverged(first_bad: torch.Tensor) -> None:
    """Raise :class:`NonFiniteLoss` if a non-finite loss was seen (one host sync; under DDP on any rank,
    so that every rank stops together); the caller adds the epoch and the last good checkpoint."""
    step = first_bad_step(first_bad)
    if step >= 0:
        raise NonFiniteLoss(step)


def all_finite(model: torch.nn.Module) -> bool:
    """True when every parameter and buffer of ``model`` is finite (one host sync)."""
    flags = [torch.isfinite(t).all() for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True
