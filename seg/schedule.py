"""The learning-rate schedule: cosine segments, so that a change of train.epochs never makes the LR jump.

A run starts with one segment: cosine annealing from ``train.lr`` to 0 over ``train.epochs``
(per step, as torch's CosineAnnealingLR). Resuming with another ``train.epochs`` (more, or
fewer but still more than the epochs done) starts a new segment at the resume point: a cosine
from the current LR to 0 over the remaining epochs. The segments are saved in the checkpoint
and written to summary.json as ``lr_schedule``:

    [{"epochs": [0, 10], "lr_start": 0.001}, {"epochs": [6, 12], "lr_start": 0.000345}]

(the second segment replaced the first from epoch 6 on). A run whose schedule has already
reached LR 0 cannot be extended: it would train at LR 0; such a run is refused with one line.
"""

from __future__ import annotations

import torch

from seg.errors import ConfigError

Segment = dict  # {"epochs": [start, end], "lr_start": float}


def first_segment(epochs: int, lr: float) -> list[Segment]:
    return [{"epochs": [0, epochs], "lr_start": lr}]


def cosine(optimizer: torch.optim.Optimizer, segment: Segment, steps_per_epoch: int):
    """The scheduler of ``segment``: cosine from the optimizer's ``initial_lr`` to 0."""
    start, end = segment["epochs"]
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, (end - start) * steps_per_epoch))


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def resume_schedule(
    optimizer: torch.optim.Optimizer, saved: dict, done: int, epochs: int, steps_per_epoch: int, run_name: str
) -> tuple[list[Segment], object]:
    """The schedule and scheduler for a run resumed after ``done`` epochs, now to train until ``epochs``.

    The same plan continues the saved scheduler; another ``epochs`` starts a new cosine segment
    from the current LR (recorded), never a jump.
    """
    if "lr_schedule" in saved:
        schedule = [dict(s) for s in saved["lr_schedule"]]
    else:  # a checkpoint written before schedules were recorded: one cosine over the epochs it planned
        schedule = first_segment(saved["config"]["train"]["epochs"], saved["config"]["train"]["lr"])
    if schedule[-1]["epochs"][1] == epochs or done >= epochs:
        lrs = [group["lr"] for group in optimizer.param_groups]  # a new scheduler resets them: keep them
        scheduler = cosine(optimizer, schedule[-1], steps_per_epoch)
        scheduler.load_state_dict(saved["scheduler"])
        for group, lr in zip(optimizer.param_groups, lrs, strict=False):
            group["lr"] = lr
        return schedule, scheduler
    lr = current_lr(optimizer)
    if lr <= 1e-6 * schedule[0]["lr_start"]:
        raise ConfigError(
            f"train.epochs: {run_name} finished its cosine schedule at epoch {done} (learning rate {lr:.3g}); "
            f"{epochs} epochs would continue at LR 0. Start a new run (another run.name) with train.epochs={epochs}"
        )
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    segment = {"epochs": [done, epochs], "lr_start": lr}
    return schedule + [segment], cosine(optimizer, segment, steps_per_epoch)
