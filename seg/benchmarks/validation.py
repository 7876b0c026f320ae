"""Benchmark: the per-epoch validation pass against a plain forward loop over the same images.

Generated nuclei-like images (bright disks on a noisy background, C mask channels) are written to a temp
folder and batched once by the project's validation dataset and DataLoader (eval transform: padded to a
multiple of 32, e.g. 1040x1388 -> 1056x1408). Both methods then run over that same list of batches, with
the same smp Unet (resnet18, the default encoder, channels_last): a plain ``torch.inference_mode()``
forward loop, and training's validation pass (``Evaluator.from_config`` with the default metrics config,
``seg.engine.evaluate``, then ``compute``). Its work beyond the forward is the unweighted BCE and
``Evaluator.update``: counts at the fixed thresholds, tuning histograms and calibration sums per pixel.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from seg.benchmarks import timing
from seg.config import BASE_CONFIG, load_config
from seg.config.specs import MaskSpec
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.folders import Sample
from seg.data.shards import validation_batches
from seg.data.transforms import eval_transform
from seg.engine import StepOptions, autocast, evaluate, to_device
from seg.models import build_model
from seg.scoring.calibration import calibration_sums
from seg.scoring.metrics import confusion_counts
from seg.scoring.structure_scores import StructureSettings
from seg.scoring.thresholds import log_q, threshold_histograms
from seg.scoring.validation import Evaluator, batch_statistics

NAME = "validation"
TARGET = (
    "validation pass (evaluate + Evaluator, default metrics) >= 0.9x the images/s of a plain inference_mode "
    "forward over the same batches (resnet18 Unet, 1040x1388 and 512x512 images, C = 1 and 5, one thread)"
)
MIN_RATIO = 0.9
THREADS = 1
WEIGHTED_POS_WEIGHT = 3.0  # q_eff of the (info) weighted run: its prior-corrected threshold is not 0.5


@dataclass(frozen=True)
class Group:
    """Images of one size evaluated together: ``count`` images of ``height`` x ``width``."""

    height: int
    width: int
    count: int


@dataclass(frozen=True)
class Plan:
    groups: tuple[Group, ...]
    channels: tuple[int, ...]
    repeats: int
    structure: bool  # add the (info) row of the last epoch's structure metrics (on the last group, C = 1)


PLANS = {
    "full": Plan((Group(1040, 1388, 2), Group(512, 512, 4)), (1, 5), 3, True),
    "quick": Plan((Group(512, 512, 2),), (1, 5), 2, True),
    "tiny": Plan((Group(200, 300, 1),), (1, 5), 1, True),
}


def write_images(folder: Path, group: Group, channels: int, seed: int = 0) -> list[Sample]:
    """``group.count`` PNG images with ``channels`` 0/255 mask planes (masks/c<k>/<stem>.png): nuclei-like disks."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(group.count):
        image = rng.normal(60, 15, (group.height, group.width, 3)).clip(0, 255).astype(np.uint8)
        masks = []
        for c in range(channels):
            mask = np.zeros((group.height, group.width), np.uint8)
            for _ in range(int(rng.integers(20, 60))):
                x, y = int(rng.integers(0, group.width)), int(rng.integers(0, group.height))
                r = int(rng.integers(4, 30)) // (c + 1) + 2  # later channels: rarer, smaller objects
                cv2.circle(mask, (x, y), r, 255, -1)
                cv2.circle(image, (x, y), r, (170 + 15 * c, 120, 160), -1)
            masks.append(folder / "masks" / f"c{c}" / f"img{i}.png")
            masks[-1].parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(masks[-1]), mask)
        path = folder / "images" / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        samples.append(Sample(f"img{i}", path, tuple(masks)))
    return samples


def validation_batches_of(samples: list[Sample], channels: int, batch_size: int) -> list[dict]:
    """The batches training's validation DataLoader yields for ``samples`` (seg.training.Loaders.build)."""
    spec = MaskSpec("multilabel", tuple(f"c{c}" for c in range(channels)))
    dataset = SegmentationDataset(samples, spec, eval_transform())
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=validation_batches(len(dataset), batch_size), num_workers=0, collate_fn=pad_collate
    )
    return list(loader)


@torch.inference_mode()
def plain_forward(model: torch.nn.Module, batches: list[dict], options: StepOptions) -> list[torch.Tensor]:
    """The reference: the model's logits for each batch (its input and autocast as ``evaluate`` has them)."""
    model.eval()
    out = []
    for batch in batches:
        with autocast(options):
            out.append(model(to_device(batch, options)["image"]))
    return out


def statistics_agree(logits: torch.Tensor, batch: dict, evaluator: Evaluator) -> bool:
    """Whether ``batch_statistics`` (worked through in parts, as ``evaluator.update`` calls it) equals, bit for
    bit, the whole-batch functions at ``evaluator``'s thresholds and bins."""
    target, valid, shift, bins = batch["target"], batch["valid"], evaluator.log_q, evaluator.ece_bins
    got = batch_statistics(logits, target, valid, evaluator.shift, evaluator.boundaries, bins)
    logits = logits.float()
    expected = {
        "0.5": confusion_counts(logits, target, valid, 0.0),
        "prior_corrected": confusion_counts(logits, target, valid, shift),
        "histograms": threshold_histograms(logits, target, valid, evaluator.boundaries),
        "ece_raw": calibration_sums(logits, target, valid, 0.0, bins),
        "ece_prior_corrected": calibration_sums(logits, target, valid, shift, bins),
    }
    return set(got) == set(expected) and all(torch.equal(got[key], expected[key]) for key in expected)


def measure_group(folder: Path, group: Group, channels: int, repeats: int, structure: bool) -> tuple[list[str], bool]:
    """Table rows for one image size and channel count, and whether the statistics agreed."""
    cfg = load_config(BASE_CONFIG)
    samples = write_images(folder / f"{group.height}x{group.width}-c{channels}", group, channels)
    batches = validation_batches_of(samples, channels, cfg.train.batch_size)
    torch.manual_seed(0)
    model = build_model(cfg.model.arch, cfg.model.encoder, None, channels).to(memory_format=torch.channels_last)
    options = StepOptions(
        torch.device("cpu"),
        amp=cfg.train.amp,
        amp_cpu=cfg.train.amp_cpu,
        channels_last=cfg.train.channels_last,
        progress=False,
    )
    names = [f"c{c}" for c in range(channels)]
    shifts = {"default": log_q([1.0] * channels), "weighted": log_q([WEIGHTED_POS_WEIGHT] * channels)}

    def validation_pass(shift: torch.Tensor, settings: StructureSettings | None = None) -> dict:
        evaluator = Evaluator.from_config(cfg.metrics, channels, options.device, shift, structure=settings)
        evaluate(model, batches, evaluator, options)
        return evaluator.compute(names)

    methods: dict[str, Callable[[], object]] = {
        "plain": lambda: plain_forward(model, batches, options),
        "evaluate": lambda: validation_pass(shifts["default"]),
    }
    if channels > 1:
        methods["weighted"] = lambda: validation_pass(shifts["weighted"])
    if structure:
        settings = StructureSettings(("rand", "vi", "object_ap"), "positive", cfg.metrics.connectivity)
        methods["structure"] = lambda: validation_pass(shifts["default"], settings)
    first = {key: value[:1] for key, value in batches[0].items()}  # one image: the check, and the model's warm-up
    logits = plain_forward(model, [first], options)[0]
    agree = all(
        statistics_agree(logits, first, Evaluator.from_config(cfg.metrics, channels, options.device, shift))
        for shift in shifts.values()
    )
    seconds = timing.interleave(methods, repeats, warmup=0)
    images = sum(len(batch["index"]) for batch in batches)
    rates = {name: spread.per_second(images) for name, spread in seconds.items()}
    padded = "x".join(str(side) for side in batches[0]["image"].shape[2:])
    where = f"{group.count} x {group.height}x{group.width} (padded {padded}), C = {channels}"
    plain = rates["plain"].median

    def ratio(name: str) -> str:
        return f"{rates[name].median / plain:.2f}x plain"

    judged = rates["evaluate"].median / plain
    rows = [
        timing.row(f"{where}: plain forward", rates["plain"], "images/s", "1.00x", digits=3),
        timing.row(
            f"{where}: validation pass",
            rates["evaluate"],
            "images/s",
            ratio("evaluate"),
            f">= {MIN_RATIO}x",
            judged >= MIN_RATIO,
            3,
        ),
    ]
    if "weighted" in rates:
        name = f"{where}: validation pass of a weighted run (q_eff = {WEIGHTED_POS_WEIGHT:g})"
        rows.append(timing.row(name, rates["weighted"], "images/s", ratio("weighted"), digits=3))
    if structure:
        name = f"{where}: last epoch's pass, metrics.structure [rand, vi, object_ap]"
        rows.append(timing.row(name, rates["structure"], "images/s", ratio("structure"), digits=3))
    return rows, agree


def run(size: str) -> list[str]:
    plan = PLANS[size]
    rows, agreed = [], True
    with timing.threads(THREADS), tempfile.TemporaryDirectory(prefix="seg-bench-validation-") as tmp:
        for number, group in enumerate(plan.groups):
            for channels in plan.channels:
                with_structure = plan.structure and number == len(plan.groups) - 1 and channels == 1
                group_rows, agree = measure_group(Path(tmp), group, channels, plan.repeats, with_structure)
                rows += group_rows
                agreed = agreed and agree
        load = os.getloadavg()[0]
    return [
        f"Generated nuclei-like PNG images with C mask channels, batched once by the project's validation "
        f"DataLoader (eval transform, batch size 8); per group the methods run over the same batches, "
        f"interleaved, {plan.repeats} timed round(s) after a warm-up forward of one image, medians of images/s; "
        f"torch and cv2 on {THREADS} thread. The validation pass is training's per-epoch one with the default "
        "config: Evaluator.from_config (default metrics; q_eff = 1, as loss.weighting none gives, so the "
        "prior-corrected threshold is 0.5 and counted once), seg.engine.evaluate, Evaluator.compute; the (info) "
        "weighted run's Evaluator has a prior-corrected threshold of its own. Agreement (both Evaluators): the "
        "per-batch statistics, worked through in parts on the CPU, equal the whole-batch functions bit for bit: "
        f"{'yes' if agreed else 'NO'}. "
        f"Load average {load:.1f} on {os.cpu_count()} CPUs at the end.",
        "",
        *timing.HEADER,
        *rows,
    ]
