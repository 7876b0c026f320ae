"""Benchmark: faster training per core, the levers side by side with today's default.

One training step as the project runs it (``seg.engine.train_one_epoch`` over one batch: forward,
the loss of ``loss.weighting: none``, backward, AdamW, the metric counts) of an smp Unet (the default
encoder, resnet18, from scratch) on the same fixed batches, for each lever: the default (float32,
channels_last, torch's default thread count), NCHW memory format, one thread (information),
``train.amp_cpu`` (bfloat16 autocast of the forward), and at full size ``train.compile: [model]``,
``[model, loss]`` and compile with bfloat16. Every variant trains its own copy of the same initial
model on the same batch sequence, one step per round, interleaved; the first step (compilation
included) is timed apart: compile time = first step - median step.

"Keeps results equal": the variant's per-step losses over the run against the default's, max relative
difference, within float32's own noise: the largest difference of the variants that compute the same
float32 arithmetic in another order (NCHW, one thread), at least 1e-3. Training from scratch amplifies
last-bit differences step by step, so no tighter tolerance holds even for the same float32 model. The
default should be the fastest variant that keeps results equal.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch

from seg.benchmarks.criteria import project_criterion
from seg.benchmarks.timing import HEADER, Spread, interleave, row, threads
from seg.config.specs import MaskSpec
from seg.data.counts import MaskCounts
from seg.engine import StepOptions, train_one_epoch
from seg.losses import Criterion
from seg.models import build_model

NAME = "training_speed"
TARGET = (
    "report each lever's training images/s vs today's default (float32, channels_last) and whether it keeps "
    "the loss curve (max relative difference within float32's own reordering noise, at least 1e-3); the default "
    "is the fastest variant that keeps it"
)
MIN_TOLERANCE = 1e-3
SIZES = {  # encoder, batch, side, timed steps, distinct batches, compile rows
    "full": ("resnet18", 8, 128, 7, 4, True),  # the default config: resnet18, batch 8, 128 px crops
    "quick": ("resnet18", 8, 128, 3, 2, False),
    "tiny": ("resnet18", 2, 64, 1, 1, False),
}


@dataclass(frozen=True)
class Variant:
    name: str
    channels_last: bool = True
    amp_cpu: bool = False
    compile: tuple[str, ...] = ()
    threads: int | None = None  # None: torch's default

    @property
    def same_arithmetic(self) -> bool:
        """float32 eager: the default's arithmetic in another order (memory layout, thread count)."""
        return not self.amp_cpu and not self.compile


def variants(with_compile: bool) -> list[Variant]:
    chosen = [
        Variant("default: float32, channels_last"),
        Variant("NCHW (channels_last off)", channels_last=False),
        Variant("one thread", threads=1),
        Variant("train.amp_cpu (bfloat16 autocast)", amp_cpu=True),
    ]
    if with_compile:
        chosen += [
            Variant("train.compile: [model]", compile=("model",)),
            Variant("train.compile: [model, loss]", compile=("model", "loss")),
            Variant("train.compile: [model] + amp_cpu", amp_cpu=True, compile=("model",)),
        ]
    return chosen


def _batches(count: int, batch: int, side: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        image = torch.randn(batch, 3, side, side, generator=generator)
        blobs = torch.nn.functional.avg_pool2d(torch.randn(batch, 1, side, side, generator=generator), 9, 1, 4)
        out.append({"image": image, "target": (blobs > 0.15).float(), "valid": torch.ones(batch, 1, side, side)})
    return out


class Trainer:
    """One variant's model, optimizer and step (the project's train_one_epoch over one batch)."""

    def __init__(self, variant: Variant, model: torch.nn.Module, batches: list[dict]) -> None:
        self.variant, self.batches = variant, batches
        self.losses: list[float] = []
        self.model = copy.deepcopy(model)
        if variant.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        criterion = project_criterion("none", ["bce"], MaskCounts(1), MaskSpec("binary", ("foreground",), (255,)))
        self.net = cast(torch.nn.Module, torch.compile(self.model)) if "model" in variant.compile else self.model
        self.loss = cast(Criterion, torch.compile(criterion)) if "loss" in variant.compile else criterion
        self.options = StepOptions(
            torch.device("cpu"), amp_cpu=variant.amp_cpu, channels_last=variant.channels_last, progress=False
        )

    def step(self) -> None:
        batch = self.batches[len(self.losses) % len(self.batches)]
        with threads(self.variant.threads) if self.variant.threads else contextlib.nullcontext():
            out = train_one_epoch(self.net, [batch], self.optimizer, self.scheduler, self.loss, self.options)
        self.losses.append(out["loss"])


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(size: str) -> tuple[list[Variant], dict[str, float], dict[str, Spread], dict[str, float], int]:
    """(variants, first-step seconds, steady step seconds, max relative loss difference vs the default, batch)."""
    encoder, batch, side, steps, distinct, with_compile = SIZES[size]
    chosen = variants(with_compile)
    torch.manual_seed(0)
    model = build_model("Unet", encoder, None, 1)
    batches = _batches(distinct, batch, side)
    trainers = [Trainer(v, model, batches) for v in chosen]
    first = {t.variant.name: _timed(t.step) for t in trainers}  # compilation happens here
    spreads = interleave({t.variant.name: t.step for t in trainers}, steps, warmup=0)
    reference = trainers[0].losses
    difference = {
        t.variant.name: max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(t.losses, reference, strict=True))
        for t in trainers
    }
    return chosen, first, spreads, difference, batch


def run(size: str) -> list[str]:
    encoder, batch, side, steps, _, with_compile = SIZES[size]
    chosen, first, spreads, difference, batch = measure(size)
    default = spreads[chosen[0].name].per_second(batch).median
    rates = {name: spread.per_second(batch) for name, spread in spreads.items()}
    tolerance = max([MIN_TOLERANCE] + [difference[v.name] for v in chosen if v.same_arithmetic])
    equal = {name: difference[name] <= tolerance for name in difference}
    # the default stays float32: bfloat16 may keep a short loss curve yet move the validation scores (README)
    float32 = [v.name for v in chosen if not v.amp_cpu and equal[v.name]]
    fastest = max(float32, key=lambda name: rates[name].median)
    lines = [
        f"smp Unet {encoder} from scratch, batch {batch}, {side}x{side}, C = 1, the project's training step "
        f"(train_one_epoch over one batch, loss.weighting none), CPU, torch's default of "
        f"{torch.get_num_threads()} threads; {steps} timed steps per variant after one first step, interleaved "
        f"(rotated order), images/s per step. Loss curve: {steps + 1} steps on the same batches against the "
        f"default's, judged within float32's own noise (the NCHW and one-thread rows: the same float32 arithmetic "
        f"in another order; here {tolerance:.4f}). Compile time as found with torch's compile cache on this "
        f"machine (a cold cache takes longer). Load average {os.getloadavg()[0]:.1f} at the end."
        + ("" if with_compile else " train.compile rows at full size only (compiling takes over a minute)."),
        "",
        *HEADER,
    ]
    for variant in chosen:
        name = variant.name
        ratio = rates[name].median / default
        lines.append(row(name, rates[name], "images/s", f"{ratio:.2f}x default", "", None))
    for variant in chosen[1:]:
        name = variant.name
        lines.append(
            row(
                f"{name}: loss curve vs default (max relative difference)",
                Spread.of([difference[name]]),
                "(relative)",
                "",
                f"<= {tolerance:.4f} (float32's noise) to keep results equal",
                None if variant.same_arithmetic else equal[name],
                digits=6,
            )
        )
    for variant in chosen:
        if variant.compile:
            name = variant.name
            compile_s = first[name] - spreads[name].median
            lines.append(row(f"{name}: compile time (first step - median step)", Spread.of([compile_s]), "s"))
    lines += [
        "",
        f"Fastest float32 variant that keeps the loss curve: **{fastest}** "
        f"({rates[fastest].median / default:.2f}x the default).",
    ]
    return lines
