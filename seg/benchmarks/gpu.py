"""Benchmark: the training step on a CUDA GPU (resnet34 Unet, 512x512, bfloat16 autocast, channels_last).

One run, each measurement against its reference on the same GPU, the compared calls interleaved
(:func:`seg.benchmarks.timing.interleave`, order rotated each round, ``torch.cuda.synchronize`` around each):

1. ``seg.engine.train_one_epoch`` (``StepOptions(amp=True)``; the Criterion of ``loss.weighting: none``, bce)
   against a plain loop (the same smp model, AdamW, forward and ``F.binary_cross_entropy_with_logits`` under
   ``torch.autocast`` bfloat16, channels_last), each with its copy of one initial model, over the same batches
   resident on the GPU (training's loader's first batches, moved once);
2. the per-step metric update of ``train_one_epoch`` (``confusion_counts`` at logit 0 into a running count) as a
   share of that step; for information, the validation update (``Evaluator.update``);
3. whether training's loader keeps the GPU busy: ``train_one_epoch`` over training's DataLoader (generated
   512x512 PNGs, ``data.num_workers`` for the machine's cores) against the same steps on resident batches, both
   timed with CUDA events from the step after the start-up ones to the end of the epoch (:class:`Window`);
4. each strategy's and loss term's cost: :mod:`seg.benchmarks.step_overhead`'s variants on the GPU, as a share
   of the project's step on the same batch;
5. last, ``torch.compile(model)`` (inductor, default mode) against eager, the compile time apart, within what
   is left of the plan's time budget (a compile that fails or runs out of time is reported in its row).

At size tiny everything runs on the CPU in float32 (the table's structure and the checks, for tests: the two
loops' first-step losses agree); without a CUDA device the other sizes return :data:`PLACEHOLDER`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F

from seg.benchmarks import step_overhead, timing, training_loop
from seg.benchmarks.criteria import project_criterion
from seg.benchmarks.data_loading import config
from seg.config import Config
from seg.data.synthetic import generate
from seg.distributed import Job
from seg.engine import StepOptions, autocast, to_device, train_one_epoch
from seg.losses import Criterion
from seg.models import build_model
from seg.run_data import RunData, prepare_data
from seg.scoring.metrics import confusion_counts
from seg.scoring.validation import Evaluator
from seg.training import Loaders

NAME = "gpu"
TARGET = (
    "on a CUDA GPU, resnet34 Unet, 512x512, batch 16, C = 1, bfloat16 autocast, channels_last: train_one_epoch >= "
    "0.95x the images/s of a plain loop on the same GPU batches; training's loader keeps the GPU >= 90% busy over "
    "the steady-state steps; the per-step metric update <= 1% of a step; each strategy's and term's loss cost "
    "within step_overhead's limits (3% / 10% / 5%); the compile speed-up reported, with the GPU's name"
)
MIN_RATIO = 0.95
MIN_BUSY = 0.90
METRIC_LIMIT = 0.01
PLACEHOLDER = [
    "Not measured on this machine (no CUDA device). On a GPU, `python scripts/benchmark.py --only gpu`",
    "measures this section there (scripts/gpu_visit.sh check runs it): resnet34 Unet at 512x512 with",
    "bfloat16 and channels_last against a plain loop, the loader keeping the GPU busy, the metric update's",
    "share of a step, each strategy's loss cost and the compile speed-up, with the GPU's name.",
]


IMAGES = 40  # generated images per run (a fifth of them for validation, unused here)
METRIC_REPEATS = 20  # metric updates per round, timed together


@dataclass(frozen=True)
class Plan:
    """What one size measures (:data:`PLANS`)."""

    device: str  # cuda; tiny: cpu
    encoder: str
    batch: int
    side: int  # the generated images' side and the crop's: every pixel valid
    steps: int  # batches per epoch of the loop comparison, resident on the device (the loss rows: half as many)
    rounds: int  # timed rounds of the loop comparison (the loss rows: twice as many; the compile rows: half)
    loader_steps: int  # steps per loader epoch
    skip: int  # first steps of a loader epoch outside its window (worker start-up, the queue filling)
    loader_rounds: int
    compile_backend: str | None  # None: no compile rows at this size
    budget_s: float  # the compile rows get what is left of it

    @property
    def loss_steps(self) -> int:
        return max(1, self.steps // 2)

    @property
    def compile_rounds(self) -> int:
        return max(1, self.rounds // 2)


PLANS = {  # device, encoder, batch, side, steps, rounds, loader_steps, skip, loader_rounds, compile_backend, budget_s
    "full": Plan("cuda", "resnet34", 16, 512, 8, 10, 48, 8, 3, "inductor", 225.0),  # under 4 minutes with start-up
    "quick": Plan("cuda", "resnet34", 8, 512, 4, 3, 16, 4, 1, None, 120.0),
    "tiny": Plan("cpu", "resnet18", 2, 64, 2, 1, 2, 1, 1, "eager", 120.0),
}


class Loop:
    """The project's loop: ``train_one_epoch`` with its model, AdamW (constant lr: a constant LambdaLR) and loss."""

    def __init__(self, model: torch.nn.Module, criterion: Criterion, options: StepOptions) -> None:
        self.model, self.criterion, self.options = model, criterion, options
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=training_loop.LR)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)

    def epoch(self, batches) -> float:
        """One epoch over ``batches`` (a list or a loader); its mean loss."""
        out = train_one_epoch(self.model, batches, self.optimizer, self.scheduler, self.criterion, self.options)
        return out["loss"]


def plain_epoch(model: torch.nn.Module, batches: list[dict], optimizer: torch.optim.Optimizer, amp: bool) -> float:
    """The smp examples' loop on a GPU: forward and loss under bfloat16 autocast (``amp``), backward, AdamW step,
    on channels_last batches already on the device; the losses are summed on the device and read once per epoch
    (a per-step ``loss.item()`` would wait for the GPU every step)."""
    model.train()
    total = torch.zeros((), device=batches[0]["image"].device)
    for batch in batches:
        with torch.autocast(batch["image"].device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch["image"])
            loss = F.binary_cross_entropy_with_logits(logits, batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return float(total) / len(batches)


class Window:
    """An epoch's batches, handed to ``train_one_epoch``, timing its steps from ``skip`` on (0-based) to the end.

    The window opens before batch ``skip`` is fetched (the wait for it counts) and closes after the last step: on
    CUDA two events, the GPU's timeline between them, so that time the GPU waits for a batch counts; on the CPU
    the host clock."""

    def __init__(self, batches, skip: int, device: torch.device) -> None:
        self.batches, self.skip, self.device = batches, skip, device
        self.marks: list[torch.cuda.Event | float] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        self.marks = [self._mark()] if self.skip == 0 else []
        for step, batch in enumerate(self.batches):
            yield batch
            if step + 1 == self.skip:  # the previous steps' work is queued: the window opens
                self.marks.append(self._mark())
        self.marks.append(self._mark())

    def _mark(self) -> torch.cuda.Event | float:
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self) -> float:
        start, end = self.marks
        if isinstance(start, torch.cuda.Event) and isinstance(end, torch.cuda.Event):
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        assert isinstance(start, float) and isinstance(end, float)
        return end - start


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """TimeoutError inside the block once it has run ``seconds`` (SIGALRM: in the main thread of a POSIX process
    with no other timer armed; elsewhere the block runs without a limit)."""
    usable = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def expire(signum, frame) -> None:
        raise TimeoutError(f"stopped after {seconds:.0f} s, what was left of the section's time budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Progress:
    """Each finished block's rows on stderr as they come (the Markdown goes to stdout at the end): a run stopped
    at its limit still leaves the measured rows in its log."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, what: str, rows: list[str]) -> list[str]:
        print(f"[gpu {self.elapsed():.0f} s] {what}", *rows, sep="\n", file=sys.stderr, flush=True)
        return rows


@dataclass(frozen=True)
class Bench:
    """What every measurement shares: the plan, the device, the step options and the clock's sync."""

    plan: Plan
    device: torch.device
    options: StepOptions
    sync: Callable[[], None] | None

    @property
    def amp(self) -> bool:
        return self.options.amp and self.device.type == "cuda"

    def per_second(self, spread: timing.Spread, steps: int) -> timing.Spread:
        """Seconds per call of ``steps`` steps -> images/s."""
        return spread.per_second(steps * self.plan.batch)


def measure_loops(
    bench: Bench, model: torch.nn.Module, criterion: Criterion, resident: list[dict]
) -> tuple[list[str], Loop, float]:
    """Rows of the loop comparison and the metric update; the project's Loop (it trains on in the later rows)
    and the relative difference of the two loops' first-step losses."""
    plan, device = bench.plan, bench.device
    project = Loop(model, criterion, bench.options)
    plain_model = copy.deepcopy(model)
    plain_optimizer = torch.optim.AdamW(plain_model.parameters(), lr=training_loop.LR)
    first = project.epoch(resident[:1]), plain_epoch(plain_model, resident[:1], plain_optimizer, bench.amp)
    # same weights, same batch: the same loss. On the CPU (tests) a difference raises; on a GPU it is a MISS row,
    # so that one short visit still brings back every other measurement
    difference = abs(first[0] - first[1]) / abs(first[1])
    if device.type != "cuda":
        training_loop.check_agreement(*first)
    with torch.no_grad(), autocast(bench.options):
        logits = model(resident[0]["image"])  # as the engine's metric update gets them (bfloat16 under amp)
    target, valid = resident[0]["target"], resident[0]["valid"]
    running = torch.zeros(target.shape[1], 4, dtype=torch.long, device=device)
    evaluator = Evaluator(target.shape[1], device, log_q=torch.ones(target.shape[1]))
    updates = [0]

    def metric_updates() -> None:  # what train_one_epoch adds per step
        for _ in range(METRIC_REPEATS):
            running.add_(confusion_counts(logits.float(), target, valid).sum(dim=0))
        updates[0] += METRIC_REPEATS

    seconds = timing.interleave(
        {
            "plain": lambda: plain_epoch(plain_model, resident, plain_optimizer, bench.amp),
            "project": lambda: project.epoch(resident),
            "metric": metric_updates,
            "validation": lambda: evaluator.update(logits.float(), target, valid),
        },
        plan.rounds,
        sync=bench.sync,
    )
    counted, expected = running.sum(dim=1).cpu(), updates[0] * int(valid.sum())
    if not bool((counted == expected).all()):
        raise RuntimeError(f"the running count holds {counted.tolist()} pixels per channel, expected {expected}")
    plain, ours = bench.per_second(seconds["plain"], plan.steps), bench.per_second(seconds["project"], plan.steps)
    paired = timing.Spread.of(p / q for p, q in zip(ours.values, plain.values, strict=True))
    step = seconds["project"].median / plan.steps
    metric = seconds["metric"].scaled(1.0 / METRIC_REPEATS)
    share = metric.median / step
    amp = ", bf16 autocast" if bench.amp else ""
    rows = [
        timing.row(
            f"plain loop (smp model, AdamW, F.binary_cross_entropy_with_logits{amp}, channels_last)",
            plain,
            "images/s",
            "1.00",
        ),
        timing.row(
            "seg.engine.train_one_epoch (Criterion: weighting none, bce)",
            ours,
            "images/s",
            f"{paired.median:.3f} (medians: {ours.median / plain.median:.3f})",
            f">= {MIN_RATIO}",
            paired.median >= MIN_RATIO,
        ),
        timing.row("train_one_epoch / plain loop, round by round", paired, "x", digits=3),
        f"| first-step loss, train_one_epoch vs plain loop (relative difference) | {difference:.1e} | - |  | "
        f"<= {training_loop.AGREEMENT:g} | {timing.verdict(difference <= training_loop.AGREEMENT)} |",
        timing.row(
            "metric update per step (confusion_counts at logit 0, summed)",
            metric.scaled(1e3),
            "ms",
            f"{share:.2%} of a train_one_epoch step",
            f"<= {METRIC_LIMIT:.0%}",
            share <= METRIC_LIMIT,
            3,
        ),
        timing.row(
            "validation update (Evaluator.update: all thresholds + ECE), for comparison",
            seconds["validation"].scaled(1e3),
            "ms",
            f"{seconds['validation'].median / step:.2%} of a train_one_epoch step",
            digits=3,
        ),
    ]
    return rows, project, difference


class Feed:
    """Training's loaders of one process on ``device`` (``Loaders.build``, as ``fit`` builds them), epoch by epoch."""

    def __init__(self, cfg: Config, data: RunData, device: torch.device) -> None:
        self.loaders = Loaders.build(cfg, data, Job(0, 1, device))
        self.epoch = 0

    def next_epoch(self) -> torch.utils.data.DataLoader:
        """Training's loader, its dataset and sampler set to the next epoch."""
        self.epoch += 1
        self.loaders.train_set.set_epoch(self.epoch)
        self.loaders.shard.set_epoch(self.epoch)
        return self.loaders.train


def with_pinning(loader: torch.utils.data.DataLoader, pin: bool) -> torch.utils.data.DataLoader:
    """Training's ``loader`` with ``pin_memory=pin``, everything else the same."""
    return torch.utils.data.DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=loader.sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        generator=loader.generator,
        drop_last=loader.drop_last,
        pin_memory=pin,
    )


def measure_loader(bench: Bench, project: Loop, feed: Feed, decoded: Feed, resident: list[dict]) -> list[str]:
    """Rows of the GPU's busy share: steps fed by training's loader (and two variants) against resident batches."""
    plan = bench.plan
    where = "GPU" if bench.device.type == "cuda" else "CPU"
    loader = feed.loaders.train
    pin = not loader.pin_memory and bench.device.type == "cuda"  # the other setting (nothing to pin on the CPU)
    other = with_pinning(loader, pin)

    def other_epoch() -> torch.utils.data.DataLoader:
        feed.next_epoch()  # the dataset's and the sampler's epoch, which the two loaders share
        return other

    sources: dict[str, Callable[[], object]] = {
        f"train_one_epoch, batches resident on the {where}": lambda: [
            resident[i % len(resident)] for i in range(plan.loader_steps)
        ],
        f"train_one_epoch over training's loader (num_workers {loader.num_workers}, pin_memory "
        f"{loader.pin_memory})": feed.next_epoch,
        f"the same with pin_memory {pin}": other_epoch,
        "the same with data.keep_decoded": decoded.next_epoch,
    }
    windows: dict[str, list[float]] = {name: [] for name in sources}

    def timed(name: str) -> Callable[[], None]:
        def call() -> None:
            window = Window(sources[name](), plan.skip, bench.device)
            project.epoch(window)
            windows[name].append(window.seconds())

        return call

    calls = {name: timed(name) for name in sources}
    for call in calls.values():  # warm-up: the files' first read, the allocator
        call()
    for values in windows.values():
        values.clear()
    timing.interleave(calls, plan.loader_rounds, warmup=0)
    steps = plan.loader_steps - plan.skip
    spreads = {name: timing.Spread.of(values) for name, values in windows.items()}
    reference, *fed = spreads
    rows = [timing.row(reference, bench.per_second(spreads[reference], steps), "images/s", "100% busy")]
    for index, name in enumerate(fed):
        busy = timing.Spread.of(r / s for r, s in zip(spreads[reference].values, spreads[name].values, strict=True))
        judged = index == 0
        rows.append(
            timing.row(
                name,
                bench.per_second(spreads[name], steps),
                "images/s",
                f"{busy.median:.1%} busy (medians: {spreads[reference].median / spreads[name].median:.1%})",
                f">= {MIN_BUSY:.0%}" if judged else "",
                busy.median >= MIN_BUSY if judged else None,
            )
        )
    return rows


def measure_losses(bench: Bench) -> list[str]:
    """step_overhead's rows on the device: each variant's loss-only call as a share of train_one_epoch's step on
    the same batch (C = 1 and 5)."""
    plan, rows = bench.plan, []
    for channels in step_overhead.CHANNELS:
        cpu_batch = step_overhead.make_batch(channels, plan.batch, plan.side)
        criteria = {name: c.to(bench.device) for name, c in step_overhead.criteria(cpu_batch).items()}
        batch = to_device(cpu_batch, bench.options)
        torch.manual_seed(0)
        model = build_model("Unet", plan.encoder, None, channels)
        loop = Loop(model.to(bench.device).to(memory_format=torch.channels_last), criteria["none"], bench.options)
        steps = [batch] * plan.loss_steps
        loop.epoch(steps)  # warm-up
        with torch.no_grad(), autocast(bench.options):
            output = loop.model(batch["image"])
        logits = output.clone().requires_grad_()  # the output's shape, dtype and memory format
        last: dict[str, torch.Tensor] = {}
        variants = {name: step_overhead.loss_only(c, logits, batch, last) for name, c in criteria.items()}
        variants["plain"] = step_overhead.plain_bce(logits, batch, last)
        step_overhead.check_variants(variants, logits, last)  # and the warm-up
        seconds = timing.interleave(
            {"step": functools.partial(loop.epoch, steps), **variants},
            2 * plan.rounds,
            warmup=0,
            sync=bench.sync,
        )
        step = seconds.pop("step").scaled(1.0 / plan.loss_steps)
        precision = "bfloat16 autocast" if bench.amp else "float32"
        rows += step_overhead.table_rows(channels, {f"{plan.encoder} ({precision})": step}, seconds)
    return rows


def failed_row(method: str, error: BaseException) -> str:
    """A row without a measurement: the method and the first line of the error."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"[:200].replace("|", "/")
    return f"| {method}: {text} | - | - |  |  | (info) |"


def measure_compile(
    bench: Bench, initial: torch.nn.Module, project: Loop, resident: list[dict], left: float
) -> tuple[list[str], str]:
    """Rows of torch.compile(model) against eager (train_one_epoch over the resident batches; the compiled loop
    gets a copy of the initial model), and a note on the outcome for the paragraph."""
    plan = bench.plan
    backend = plan.compile_backend
    if backend is None:
        return [], "torch.compile rows at full size only (a cold compile takes minutes)"
    name = f"torch.compile(model) ({backend}, default mode)"
    if left <= 0:
        return [f"| {name}: not run, the section's time budget was spent | - | - |  |  | (info) |"], "not run"
    try:
        with time_limit(left):
            compiled = Loop(
                cast(torch.nn.Module, torch.compile(copy.deepcopy(initial), backend=backend)),
                project.criterion,
                project.options,
            )
            start = time.perf_counter()
            compiled.epoch(resident[:1])  # compiles the forward and the backward
            first = time.perf_counter() - start  # train_one_epoch reads its loss: the queue is empty at the end
            seconds = timing.interleave(
                {"eager": lambda: project.epoch(resident), "compiled": lambda: compiled.epoch(resident)},
                plan.compile_rounds,
                sync=bench.sync,
            )
    except Exception as error:  # noqa: BLE001 - a missing compiler, an unsupported op, the time limit
        return [failed_row(name, error)], f"failed ({type(error).__name__})"
    eager, fast = (bench.per_second(seconds[key], plan.steps) for key in ("eager", "compiled"))
    compile_s = first - seconds["compiled"].median / plan.steps
    return [
        timing.row("train_one_epoch, eager (the rows above)", eager, "images/s", "1.00x"),
        timing.row(f"train_one_epoch, {name}", fast, "images/s", f"{fast.median / eager.median:.2f}x eager"),
        timing.row(f"{name}: compile time (first step - median step)", timing.Spread.of([compile_s]), "s"),
    ], f"compiled in {compile_s:.0f} s (within the {left:.0f} s left of the budget)"


def binary_cells(synthetic: Path, root: Path) -> Path:
    """The generated set's ``cell`` masks as a binary dataset (``images/``, ``masks/``: links into ``synthetic``)."""
    root.mkdir()
    (root / "images").symlink_to(synthetic / "images", target_is_directory=True)
    (root / "masks").symlink_to(synthetic / "masks" / "cell", target_is_directory=True)
    return root


def describe(device: torch.device) -> str:
    if device.type != "cuda":
        return (
            f"Device: cpu ({os.cpu_count()} cores, torch {torch.__version__}; one thread, float32, nothing to pin: the "
            "table's structure and the checks, no GPU timing)"
        )
    return (
        f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version()}; {os.cpu_count()} CPU cores"
    )


def report(plan: Plan, device: torch.device) -> list[str]:
    """The section's paragraph and table for ``plan`` on ``device``."""
    progress = Progress()
    workers = max(0, (os.cpu_count() or 1) - 2)  # the main process and pin_memory's thread take two cores
    options = StepOptions(device, amp=True, channels_last=True, progress=False, log_every=0)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    bench = Bench(plan, device, options, sync)
    with tempfile.TemporaryDirectory(prefix="seg-bench-gpu-") as tmp:
        folder = Path(tmp)
        root = binary_cells(generate(folder / "synthetic", IMAGES, plan.side), folder / "cells")
        overrides = (
            f"data.root={root}",
            "data.mask_format=binary",
            "data.classes=[cell]",
            "data.positive_values=[255]",
            "data.synthetic=false",
            f"data.image_size={plan.side}",
            f"data.num_workers={workers}",
            f"data.samples_per_epoch={plan.loader_steps * plan.batch}",
            f"train.batch_size={plan.batch}",
        )
        cfg = config(folder / "runs", *overrides)
        data = prepare_data(cfg, progress=False)
        feed = Feed(cfg, data, device)
        decoded = Feed(config(folder / "runs", *overrides, "data.keep_decoded=true"), data, device)
        resident = [to_device(batch, options) for batch in itertools.islice(feed.next_epoch(), plan.steps)]
        criterion = project_criterion("none", ["bce"], data.train_counts, data.spec).to(device)
        torch.manual_seed(0)
        model = build_model("Unet", plan.encoder, None, 1).to(device).to(memory_format=torch.channels_last)
        initial = copy.deepcopy(model)
        rows, project, difference = measure_loops(bench, model, criterion, resident)
        rows = progress("loops and metric update", rows)
        rows += progress("loader", measure_loader(bench, project, feed, decoded, resident))
    rows += progress("loss cost", measure_losses(bench))
    compile_rows, compiled = measure_compile(bench, initial, project, resident, plan.budget_s - progress.elapsed())
    rows += progress("compile", compile_rows)
    return [paragraph(bench, workers, difference, compiled, progress.elapsed()), "", *timing.HEADER, *rows]


def paragraph(bench: Bench, workers: int, difference: float, compiled: str, elapsed: float) -> str:
    """How the section measured, and what it checked."""
    plan, device = bench.plan, bench.device
    where = "the GPU" if device.type == "cuda" else "the device"
    return (
        f"{describe(device)}. smp.Unet({plan.encoder}, encoder_weights=None, classes=1), model and input "
        f"channels_last, {'bfloat16 autocast of the forward' if bench.amp else 'float32'}, AdamW (lr "
        f"{training_loop.LR:g}, constant), batch {plan.batch}, {plan.side} px crops of generated {plan.side}x"
        f"{plan.side} PNGs (every pixel valid), C = 1 (their cell masks). Loops: train_one_epoch "
        "(StepOptions(amp=True); the Criterion of weighting none, bce) and a plain loop (forward and "
        "F.binary_cross_entropy_with_logits under torch.autocast, bfloat16 on CUDA; backward, AdamW step; the loss "
        "summed on the device, read once per epoch), each with its copy of one initial model, over the same "
        f"{plan.steps} batches resident on {where} (training's loader's first, moved once); one untimed round, "
        f"then {plan.rounds} round(s) of one epoch of each with {METRIC_REPEATS} metric updates (timed together) "
        "and a validation update, interleaved (timing.interleave, torch.cuda.synchronize before each clock read); "
        "medians of images/s per epoch; judged: the median of the round-by-round ratios. Metric update: what "
        "train_one_epoch adds per step (confusion_counts(logits.float(), target, valid) at logit 0, summed), on "
        "this model's logits, as a share of the median train_one_epoch step. Loader: training's DataLoader "
        f"(Loaders.build for one process on this device; data.num_workers {workers}; crops, flips and turns of "
        f"PNGs read per item) feeding train_one_epoch, {plan.loader_steps} steps per epoch, workers started per "
        f"epoch as in training. GPU busy share = the time of steps {plan.skip + 1}..{plan.loader_steps} on "
        f"batches resident on {where} / the time of the same steps fed by the loader, each timed between CUDA "
        f"events (from before step {plan.skip + 1}'s batch is fetched to after the last step: time the GPU waits "
        f"for a batch counts, start-up does not); {plan.loader_rounds} round(s) after a warm-up epoch of each, "
        "interleaved; judged: the median of the round-by-round shares. Loss cost: step_overhead's variants and "
        "batches (positives in blobs, one image's bottom eighth ignored, border maps with the batch) on fixed "
        f"logits (a {'bfloat16' if bench.amp else 'float32'} channels_last leaf copy of the model output, as the "
        "criterion gets them), as a share of the median train_one_epoch step on the same batch; "
        f"{2 * plan.rounds} interleaved round(s). Compile: {compiled}; compile time = first step - median step, "
        "with whatever compile cache the machine has. Checked on every run: the two loops' first-step losses on "
        f"the same batch agree within {training_loop.AGREEMENT:g} relative (here {difference:.1e}); the running "
        "count holds every valid pixel once per update; every loss variant's loss and gradient are finite. "
        f"Section wall time {elapsed:.0f} s (budget {plan.budget_s:.0f} s); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end."
    )


def run(size: str) -> list[str]:
    plan = PLANS[size]
    if plan.device == "cuda" and not torch.cuda.is_available():
        return list(PLACEHOLDER)
    if plan.device == "cpu":  # one thread: a DataLoader worker beside a multi-threaded step stalls it (data_loading)
        with timing.threads(1):
            return report(plan, torch.device("cpu"))
    return report(plan, torch.device(plan.device))
