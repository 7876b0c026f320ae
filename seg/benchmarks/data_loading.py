"""Benchmark: does the training data loader keep up with the model?

The loaders are training's own (``seg.run_data.prepare_data`` and ``seg.training.Loaders.build`` from a
config: the training dataset with the configured augmentation, ``GlobalBatchShard``, ``pad_collate``,
``data.num_workers``), on the project's generated synthetic set in a temp folder (the default one: 48
images of 144x144, 38 for training: 4 steps of 8 per epoch; and 24 images of 288x288 for 256 px crops).
A loader call is one training epoch, worker start-up included (training starts the workers every epoch);
a model call is ``seg.engine.train_one_epoch`` (smp Unet resnet18 from scratch, channels_last, the default
loss, AdamW) over the same epoch's batches loaded beforehand; an end-to-end call is ``train_one_epoch`` over
the loader. Every row's calls are interleaved with every other row's in one run.

torch and cv2 run on one thread in the main process, and at full size also on torch's default (one thread per
core, what training uses): on 2 cores any other busy process (another job, or a DataLoader worker) stalls every
parallel region of a multi-threaded step (measured: a training step 10x slower than on one thread, while on an
idle machine it is 1.75x faster).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seg.benchmarks import timing
from seg.config import BASE_CONFIG, Config, expand_path, load_config
from seg.data.synthetic import generate
from seg.distributed import Job
from seg.engine import StepOptions, train_one_epoch
from seg.models import build_model
from seg.run_data import RunData, prepare_data
from seg.training import Loaders, build_criterion

NAME = "data_loading"
TARGET = (
    "loader images/s >= the model's training images/s (ratio >= 1) in the configuration the project uses by "
    "default (data.num_workers 0, 128 px crops, batch 8); end-to-end images/s at num_workers 0/1/2 picks the default"
)
MIN_RATIO = 1.0
JOB = Job(0, 1, torch.device("cpu"))  # one process, on the CPU
WORKERS = (0, 1, 2)
ISBI_OVERRIDES = (  # configs/isbi2012.yaml's data section
    "data.mask_format=binary",
    "data.classes=[membrane]",
    "data.positive_values=[0]",
    "data.synthetic=false",
    "data.samples_per_epoch=64",
    "data.test_fraction=0.2",
)


@dataclass(frozen=True)
class Plan:
    repeats: int  # timed rounds
    images: tuple[int, int]  # generated images, side (the default set: 48, 144)
    crop: int  # data.image_size of the default rows
    batch: int  # train.batch_size
    large: tuple[int, int, int] | None  # images, side, crop of the large-crop rows (None: left out)
    steps: int | None  # train.max_steps_per_epoch of the end-to-end rows (None: the whole epoch)
    default_threads: bool  # add the model and the end-to-end rows on torch's default thread count
    real_data: bool  # add the (info) loader of the ISBI 2012 images where they are present


PLANS = {
    "full": Plan(3, (48, 144), 128, 8, (24, 288, 256), None, True, True),
    "quick": Plan(2, (48, 144), 128, 8, None, 2, False, True),
    "tiny": Plan(1, (12, 72), 64, 2, None, 1, False, False),
}


@dataclass
class Setup:
    """One configuration's data and loaders, and the epoch its next call runs."""

    cfg: Config
    data: RunData
    loaders: Loaders = field(init=False)
    epoch: int = 0

    def __post_init__(self) -> None:
        self.loaders = Loaders.build(self.cfg, self.data, JOB)

    @classmethod
    def of(cls, cfg: Config) -> Setup:
        return cls(cfg, prepare_data(cfg, progress=False))

    def next_epoch(self) -> None:
        self.epoch += 1
        self.loaders.train_set.set_epoch(self.epoch)
        self.loaders.shard.set_epoch(self.epoch)

    def epoch_batches(self) -> list[dict]:
        """The batches of the next epoch."""
        self.next_epoch()
        return list(self.loaders.train)

    def images_per_epoch(self) -> int:
        return self.loaders.steps_per_epoch * self.cfg.train.batch_size


def config(out: Path, *overrides: str) -> Config:
    """The default config writing under ``out``, W&B off, plus ``overrides`` (data.root among them)."""
    return load_config(BASE_CONFIG, [f"run.out_dir={out}", "logging.wandb.mode=disabled", *overrides])


class Trainer:
    """A model, optimizer and loss as training builds them; ``epoch`` trains over a loader (or a list of batches)."""

    def __init__(self, setup: Setup) -> None:
        cfg = setup.cfg
        torch.manual_seed(0)
        model = build_model(cfg.model.arch, cfg.model.encoder, None, cfg.num_classes)
        self.model = model.to(memory_format=torch.channels_last)
        self.criterion, _ = build_criterion(cfg, setup.data)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.options = StepOptions(
            torch.device("cpu"),
            amp_cpu=cfg.train.amp_cpu,
            channels_last=cfg.train.channels_last,
            max_steps=cfg.train.max_steps_per_epoch,
            progress=False,
        )

    def epoch(self, loader) -> None:
        train_one_epoch(self.model, loader, self.optimizer, self.scheduler, self.criterion, self.options)


def same_batches(first: list[dict], second: list[dict]) -> bool:
    """Whether two epochs' batches hold the same tensors."""
    return len(first) == len(second) and all(
        a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
        for a, b in zip(first, second, strict=True)
    )


@dataclass
class Row:
    """A timed method: ``images`` per call, compared with the row ``against`` (None: the reference itself)."""

    call: Callable[[], object]
    images: int
    against: str | None
    judged: bool = False


class Rows(dict[str, Row]):
    def add(self, name: str, call: Callable[[], object], images: int, against: str | None, judged: bool = False):
        self[name] = Row(call, images, against, judged)


def measure(plan: Plan, folder: Path, default_threads: int) -> tuple[list[str], dict[str, bool], dict[int, int]]:
    """Table rows, the agreement checks (name -> held) and the num_workers fastest end to end per thread count."""
    default_root = generate(folder / "default", *plan.images)
    base = (f"data.root={default_root}", f"data.image_size={plan.crop}", f"train.batch_size={plan.batch}")

    def setup(name: str, *overrides: str) -> Setup:
        return Setup.of(config(folder / "runs" / name, *base, *overrides))

    loaders = {workers: setup(f"w{workers}", f"data.num_workers={workers}") for workers in WORKERS}
    foreground = setup("foreground", "data.sampling=foreground")
    border, cold = (setup(name, "loss.weighting=border_map") for name in ("border", "border-cold"))
    agree = {"num_workers": True, "border_map": True}
    first = loaders[0].epoch_batches()
    for workers in WORKERS[1:]:  # augmentation is seeded per (seed, epoch, item): the same batches with any workers
        agree["num_workers"] &= same_batches(first, loaders[workers].epoch_batches())
    computed = border.epoch_batches()  # epoch 1 computes the border maps and caches them on disk
    agree["border_map"] = same_batches(computed, Setup(border.cfg, border.data).epoch_batches())  # read back

    def cold_border_epoch() -> None:  # a new run's first epoch: nothing cached, in memory or on disk
        shutil.rmtree(folder / "runs" / "border-cold" / ".cache", ignore_errors=True)
        Setup(cold.cfg, cold.data).epoch_batches()

    model = f"model, {plan.crop} px crops (train_one_epoch over the epoch's batches, loaded before)"
    rows = Rows()
    images = loaders[0].images_per_epoch()  # the same in each of these configurations
    for workers in WORKERS:
        judged = workers == 0  # the default configuration
        rows.add(f"loader, num_workers {workers}", loaders[workers].epoch_batches, images, model, judged)
    rows.add("loader, data.sampling foreground", foreground.epoch_batches, images, model)
    rows.add("loader, border_map, first epoch (cold cache)", cold_border_epoch, images, model)
    rows.add("loader, border_map, later epoch (warm cache)", border.epoch_batches, images, model)
    isbi = isbi_setup(folder) if plan.real_data else None
    if isbi is not None:
        isbi.epoch_batches()  # warm-up: the first read of the files
        name = f"(info) loader, ISBI 2012 ({isbi.cfg.data.image_size} px crops of 512x512 images), num_workers 0"
        rows.add(name, isbi.epoch_batches, isbi.images_per_epoch(), model)
    trainer = Trainer(loaders[0])
    loaded = first[: plan.steps]  # as many steps as an end-to-end epoch
    trainer.epoch(loaded[:1])  # warm-up: the first step of a model is slow
    rows.add(model, lambda: trainer.epoch(loaded), images_in(loaded), None)
    threaded = f"model on torch's default of {default_threads} threads"
    if plan.default_threads:
        rows.add(threaded, on_threads(default_threads, lambda: trainer.epoch(loaded)), images_in(loaded), model)
    if plan.large is not None:
        count, side, crop = plan.large
        large_root = generate(folder / "large", count, side)
        large = Setup.of(config(folder / "runs" / "large", *base, f"data.root={large_root}", f"data.image_size={crop}"))
        large_trainer = Trainer(large)
        large_loaded = large.epoch_batches()
        large_trainer.epoch(large_loaded[:1])
        large_model = f"model, {crop} px crops (train_one_epoch over the epoch's batches, loaded before)"
        name = f"loader, {crop} px crops of {side} px images, num_workers 0"
        rows.add(name, large.epoch_batches, large.images_per_epoch(), large_model)
        rows.add(large_model, lambda: large_trainer.epoch(large_loaded), images_in(large_loaded), None)
    steps = () if plan.steps is None else (f"train.max_steps_per_epoch={plan.steps}",)
    ends = {workers: setup(f"end-w{workers}", f"data.num_workers={workers}", *steps) for workers in WORKERS}
    end_trainer = Trainer(ends[0])
    settings = [(1, model)] + ([(default_threads, threaded)] if plan.default_threads else [])
    for threads, against in settings:
        for workers, each in ends.items():

            def end_to_end(each: Setup = each) -> None:
                each.next_epoch()
                end_trainer.epoch(each.loaders.train)

            rows.add(
                end_to_end_row(workers, threads), on_threads(threads, end_to_end), each.images_per_epoch(), against
            )
    seconds = timing.interleave({name: row.call for name, row in rows.items()}, plan.repeats, warmup=0)
    rates = {name: seconds[name].per_second(row.images) for name, row in rows.items()}
    fastest = {
        threads: max(WORKERS, key=lambda workers: rates[end_to_end_row(workers, threads)].median)
        for threads, _ in settings
    }
    return [table_row(name, row, rates) for name, row in rows.items()], agree, fastest


def end_to_end_row(workers: int, threads: int) -> str:
    return f"end to end (loader + model), num_workers {workers}, {threads} thread" + "s" * (threads > 1)


def on_threads(count: int, call: Callable[[], object]) -> Callable[[], object]:
    """``call`` with torch and cv2 on ``count`` threads."""

    def run() -> object:
        with timing.threads(count):
            return call()

    return run


def images_in(batches: list[dict]) -> int:
    return sum(len(batch["index"]) for batch in batches)


def table_row(name: str, row: Row, rates: dict[str, timing.Spread]) -> str:
    if row.against is None:
        return timing.row(name, rates[name], "images/s", "1.00x")
    ratio = rates[name].median / rates[row.against].median
    text = f"{ratio:.2f}x " + ("one thread" if name.startswith("model on torch's default") else "model")
    if row.judged:
        return timing.row(name, rates[name], "images/s", text, f">= {MIN_RATIO:g}x", ratio >= MIN_RATIO)
    return timing.row(name, rates[name], "images/s", text)


def isbi_setup(folder: Path) -> Setup | None:
    """configs/isbi2012.yaml's loader (128 px crops of the 512x512 ISBI 2012 training images), where the shared
    data is present."""
    cfg = config(folder / "runs" / "isbi", "data.root=${SEG_SHARED_DATA}/isbi2012_membrane", *ISBI_OVERRIDES)
    return Setup.of(cfg) if (expand_path(cfg.data.root) / "train" / "images").is_dir() else None


def run(size: str) -> list[str]:
    plan = PLANS[size]
    default_threads = torch.get_num_threads()
    with timing.threads(1), tempfile.TemporaryDirectory(prefix="seg-bench-loading-") as tmp:
        rows, agree, fastest = measure(plan, Path(tmp), default_threads)
        load = os.getloadavg()[0]
    checks = ", ".join(f"{name}: {'yes' if held else 'NO'}" for name, held in agree.items())
    best = "; ".join(f"on {threads} thread(s): num_workers {workers}" for threads, workers in fastest.items())
    return [
        f"Training's loaders on the generated synthetic set ({plan.images[0]} images of {plan.images[1]} px, "
        f"{plan.crop} px crops, batch {plan.batch}); torch and cv2 on 1 thread in the main process"
        + (f", and on torch's default of {default_threads} where a row says so" if plan.default_threads else "")
        + f"; one thread per DataLoader worker; {plan.repeats} timed round(s), every row's calls interleaved (rotated "
        "order), medians of images/s. Loader rows: one epoch, worker start-up included; their ratio is to the "
        "model (train_one_epoch over the same batches, loaded beforehand) at the same crop size; judged: the default "
        "configuration. End-to-end rows: train_one_epoch over the loader"
        + (f" (train.max_steps_per_epoch {plan.steps})" if plan.steps else "")
        + ", against the model on as many threads. Agreement (the same batches at num_workers 0, 1 and 2; border "
        f"maps read back from the disk cache equal to the computed ones): {checks}. Fastest end to end: {best}. "
        f"Load average {load:.1f} on {os.cpu_count()} CPUs at the end (other busy processes stall torch's "
        "multi-threaded steps most).",
        "",
        *timing.HEADER,
        *rows,
    ]
