"""Metric overhead: the per-step count update at one threshold vs a training step.

Interleaved in one run (:func:`seg.benchmarks.timing.interleave`, the order rotated each round), per channel
count C: a training step (forward, BCE, backward, AdamW step) of smp.Unet(encoder, encoder_weights=None,
classes=C) on channels_last input, and the update training does after it: confusion_counts of the step's
logits at logit 0 (valid mask included) summed into a running [C,4] count. For information (no target),
the full validation update (three thresholds, threshold histograms, calibration sums) on the same logits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from seg.benchmarks import timing
from seg.scoring.metrics import confusion_counts
from seg.scoring.validation import Evaluator

NAME = "metrics"
TARGET = "per-step metric update at one threshold <= 2% of a training step (resnet34 Unet, [8,C,256,256], C = 1 and 5)"
LIMIT = 0.02
CHANNELS = (1, 5)


@dataclass(frozen=True)
class Size:
    encoder: str
    batch: int
    side: int
    rounds: int  # each: one training step, one validation update, metric_repeats one-threshold updates
    metric_repeats: int


SIZES = {
    "full": Size("resnet34", 8, 256, 5, 20),
    "quick": Size("resnet34", 8, 256, 2, 5),
    "tiny": Size("resnet18", 2, 64, 1, 1),
}


def measure(channels: int, size: Size, device: torch.device) -> dict[str, timing.Spread]:
    """Seconds of a training step, of one one-threshold update and of one validation update.

    RuntimeError unless the running count holds every valid pixel once per update (tp + fp + fn + tn)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet(size.encoder, encoder_weights=None, classes=channels)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    shape = (size.batch, channels, size.side, size.side)
    images = torch.randn(size.batch, 3, size.side, size.side, device=device).contiguous(
        memory_format=torch.channels_last
    )
    target = (torch.rand(shape, device=device) < 0.1).float()
    valid = torch.ones(size.batch, 1, size.side, size.side, dtype=torch.bool, device=device)
    running = torch.zeros(channels, 4, dtype=torch.long, device=device)
    evaluator = Evaluator(channels, device, log_q=torch.ones(channels))
    last: dict[str, torch.Tensor] = {}
    updates = [0]

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
        optimizer.step()
        last["logits"] = logits.detach()

    def metric_updates() -> None:
        for _ in range(size.metric_repeats):
            running.add_(confusion_counts(last["logits"], target, valid, 0.0).sum(dim=0))
        updates[0] += size.metric_repeats

    model.train()
    train_step()  # the logits the updates read before the first round's step
    sync: Callable[[], None] | None = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    seconds = timing.interleave(
        {
            "step": train_step,
            "update": metric_updates,
            "validation": lambda: evaluator.update(last["logits"], target, valid),
        },
        repeats=size.rounds,
        sync=sync,
    )
    counted = running.sum(dim=1).cpu()
    expected = updates[0] * int(valid.sum())
    if not bool((counted == expected).all()):
        raise RuntimeError(f"the running count holds {counted.tolist()} pixels per channel, expected {expected}")
    seconds["update"] = seconds["update"].scaled(1.0 / size.metric_repeats)
    return seconds


def run(size: str) -> list[str]:
    chosen = SIZES[size]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for channels in CHANNELS:
        seconds = measure(channels, chosen, device)
        step, update, validation = seconds["step"], seconds["update"], seconds["validation"]
        ratio = update.median / step.median
        rows += [
            timing.row(f"training step, C={channels}", step.scaled(1e3), "ms"),
            timing.row(
                f"metric update, one threshold, C={channels}",
                update.scaled(1e3),
                "ms",
                f"{ratio:.2%}",
                f"<= {LIMIT:.0%}",
                ratio <= LIMIT,
                2,
            ),
            timing.row(
                f"validation update, all thresholds + ECE, C={channels}",
                validation.scaled(1e3),
                "ms",
                f"{validation.median / step.median:.2%}",
            ),
        ]
    threads = f", {torch.get_num_threads()} torch threads (the default)" if device.type == "cpu" else ""
    return [
        f"Device: {device.type}{threads}. smp.Unet({chosen.encoder}, encoder_weights=None, classes=C), model and "
        f"input channels_last, batch {chosen.batch}, {chosen.side} px, random targets (10% positives), every pixel "
        f"valid. {chosen.rounds} round(s) after one warm-up round, interleaved (timing.interleave, order rotated): a "
        f"training step, {chosen.metric_repeats} one-threshold updates (timed together, per update), a validation "
        f"update; medians of {chosen.rounds}. Ratio: the share of the median training step. Checked on every "
        "run: the running count holds every valid pixel once per update. Load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end.",
        "",
        *timing.HEADER,
        *rows,
    ]
