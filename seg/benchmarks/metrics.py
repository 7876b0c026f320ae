"""Metric overhead: the per-step count update at one threshold vs a training step.

Side by side in one run, per channel count C: a training step (forward, BCE, backward,
AdamW step) of smp.Unet('resnet34', encoder_weights=None, classes=C) on [8,3,256,256]
channels_last input, and the update training does after it: confusion_counts of the
step's logits at logit 0 (valid mask included) summed into a running [C,4] count.
For information (no target), the full validation update (three thresholds, threshold
histograms, calibration sums) on the same logits.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch

from seg.scoring.metrics import confusion_counts
from seg.scoring.validation import Evaluator

T = TypeVar("T")

NAME = "metrics"
TARGET = "per-step metric update at one threshold <= 2% of a training step (resnet34 Unet, [8,C,256,256], C = 1 and 5)"
BATCH, SIZE, LIMIT = 8, 256, 0.02


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def measure(channels: int, repeats: int, metric_repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of a training step, of the one-threshold update, and of the validation update."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet("resnet34", encoder_weights=None, classes=channels).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(BATCH, 3, SIZE, SIZE, device=device).contiguous(memory_format=torch.channels_last)
    target = (torch.rand(BATCH, channels, SIZE, SIZE, device=device) < 0.1).float()
    valid = torch.ones(BATCH, 1, SIZE, SIZE, dtype=torch.bool, device=device)
    running = torch.zeros(channels, 4, dtype=torch.long, device=device)
    evaluator = Evaluator(channels, device, log_q=torch.ones(channels))

    def train_step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
        optimizer.step()
        return logits.detach()

    def metric_update(logits: torch.Tensor) -> None:
        running.add_(confusion_counts(logits, target, valid, 0.0).sum(dim=0))

    model.train()
    _, logits = _timed(train_step, device)  # warm-up
    metric_update(logits)
    evaluator.update(logits, target, valid)
    steps, updates, validation = [], [], []
    for _ in range(repeats):  # interleaved: the two are measured under the same conditions
        seconds, logits = _timed(train_step, device)
        steps.append(seconds)
        updates += [_timed(partial(metric_update, logits), device)[0] for _ in range(metric_repeats)]
        validation.append(_timed(partial(evaluator.update, logits, target, valid), device)[0])
    return {
        "step": statistics.median(steps),
        "update": statistics.median(updates),
        "validation": statistics.median(validation),
    }


def run(size: str) -> list[str]:
    quick = size != "full"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeats, metric_repeats = (2, 5) if quick else (5, 20)
    lines = [
        f"Device: {device.type}; median of {repeats} training steps (after one warm-up) and of "
        f"{repeats * metric_repeats} metric updates.",
        "",
        "| C | training step (ms) | metric update, one threshold (ms) | ratio | target | "
        "validation update, all thresholds + ECE (ms, no target) |",
        "|---|---|---|---|---|---|",
    ]
    for channels in (1, 5):
        t = measure(channels, repeats, metric_repeats, device)
        ratio = t["update"] / t["step"]
        verdict = "PASS" if ratio <= LIMIT else "FAIL"
        lines.append(
            f"| {channels} | {1000 * t['step']:.1f} | {1000 * t['update']:.2f} | {100 * ratio:.2f}% | "
            f"{verdict} (<= {100 * LIMIT:.0f}%) | {1000 * t['validation']:.1f} |"
        )
    return lines
