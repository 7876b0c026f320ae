"""Benchmark: the project's training loop against the minimal loop a user would write from the smp examples.

``seg.engine.train_one_epoch`` (the Criterion with weighting none and the bce term, train Dice counts, weight
sums, the finite-loss flag) against a plain loop: channels_last input and model, forward,
``F.binary_cross_entropy_with_logits``, backward, AdamW step, ``loss.item()``. Both get their own copy of one
initialised model and their own AdamW, and run the same fixed list of CPU batches, made by the project's
dataset and pad_collate from generated images (the first epoch of each is the warm-up and the agreement
check), then epochs alternate (:func:`seg.benchmarks.timing.interleave`, the order rotated each round).
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from seg.benchmarks import timing
from seg.benchmarks.criteria import project_criterion
from seg.config import MaskSpec
from seg.data.counts import count_masks
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.folders import Sample
from seg.data.synthetic import generate
from seg.data.transforms import train_transform
from seg.engine import StepOptions, train_one_epoch

NAME = "training_loop"
TARGET = (
    "seg.engine.train_one_epoch >= 0.97x the images/s of a minimal plain loop (smp examples: AdamW, "
    "F.binary_cross_entropy_with_logits, channels_last) on the same CPU batches (resnet18 Unet, batch 8, 256 px, C = 1)"
)
MIN_RATIO = 0.97
LR = 1e-4
AGREEMENT = 1e-4  # relative difference of the two first epochs' mean losses (see check_agreement)


@dataclass(frozen=True)
class Size:
    encoder: str
    batch: int
    side: int
    steps: int  # batches per epoch
    rounds: int  # timed epochs of each loop


SIZES = {
    "full": Size("resnet18", 8, 256, 4, 10),
    "quick": Size("resnet18", 8, 256, 3, 3),
    "tiny": Size("resnet18", 2, 64, 2, 1),
}


def make_batches(folder: Path, size: Size) -> tuple[list[dict], SegmentationDataset]:
    """``size.steps`` batches of the training dataset over generated images (side + 32 px, so that the random
    crop needs no padding: every pixel is valid), their ``cell`` masks as binary masks (C = 1)."""
    root = generate(folder / "synthetic", count=min(size.steps * size.batch, 16), size=size.side + 32)
    samples = [
        Sample(path.stem, path, (root / "masks" / "cell" / path.name,))
        for path in sorted((root / "images").glob("*.png"))
    ]
    spec = MaskSpec("binary", ("cell",), (255,))
    dataset = SegmentationDataset(samples, spec, train_transform(size.side), length=size.steps * size.batch)
    items = [dataset[i] for i in range(len(dataset))]
    return [pad_collate(items[i : i + size.batch]) for i in range(0, len(items), size.batch)], dataset


def plain_epoch(model: torch.nn.Module, batches: list[dict], optimizer: torch.optim.Optimizer) -> float:
    """The loop of the smp examples: the mean of the steps' losses."""
    model.train()
    total = 0.0
    for batch in batches:
        images = batch["image"].contiguous(memory_format=torch.channels_last)
        logits = model(images)
        loss = F.binary_cross_entropy_with_logits(logits, batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)


def check_agreement(project: float, plain: float) -> float:
    """The relative difference of the two first epochs' mean losses; RuntimeError above :data:`AGREEMENT`.

    Same initial weights, same batches, every pixel valid: the project's loss with weighting none is the plain
    mean BCE, up to float32 rounding (a masked sum divided by the valid count against F.binary_cross_entropy
    _with_logits's mean). AdamW's first updates are about lr * sign(gradient), so a rounding difference in a
    near-zero gradient can move a weight by up to 2 * lr = 2e-4 per step: 1e-4 relative on the epoch's mean
    loss leaves room for that and catches any difference in the loss itself (a weight, a mask, a mean over
    something else)."""
    difference = abs(project - plain) / abs(plain)
    if difference > AGREEMENT:
        raise RuntimeError(f"first epoch's mean loss: train_one_epoch {project} vs plain loop {plain}")
    return difference


def run(size: str) -> list[str]:
    import segmentation_models_pytorch as smp

    chosen = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="seg-bench-loop-") as tmp:
        batches, dataset = make_batches(Path(tmp), chosen)
        criterion = project_criterion(
            "none", ["bce"], count_masks(dataset.samples, dataset.spec, progress=False), dataset.spec
        )
    torch.manual_seed(0)
    model = smp.Unet(chosen.encoder, encoder_weights=None, classes=1).to(memory_format=torch.channels_last)
    plain_model = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    plain_optimizer = torch.optim.AdamW(plain_model.parameters(), lr=LR)
    options = StepOptions(torch.device("cpu"), progress=False, log_every=0)

    def project_epoch() -> float:
        return train_one_epoch(model, batches, optimizer, scheduler, criterion, options)["loss"]

    difference = check_agreement(project_epoch(), plain_epoch(plain_model, batches, plain_optimizer))
    seconds = timing.interleave(
        {"plain": lambda: plain_epoch(plain_model, batches, plain_optimizer), "project": project_epoch},
        repeats=chosen.rounds,
        warmup=0,  # the first epochs above
    )
    images = chosen.steps * chosen.batch
    plain, project = seconds["plain"].per_second(images), seconds["project"].per_second(images)
    paired = timing.Spread.of(p / q for p, q in zip(project.values, plain.values, strict=True))
    ratio = paired.median  # judged: a load change between rounds moves both epochs of a round alike
    return [
        f"CPU, {torch.get_num_threads()} torch threads (the default). smp.Unet({chosen.encoder}, "
        f"encoder_weights=None, classes=1), model and input channels_last, AdamW (lr {LR:g}, constant: "
        f"train_one_epoch gets a constant LambdaLR), batch {chosen.batch}, {chosen.side} px, {chosen.steps} "
        f"batches per epoch ({images} images: the training dataset's random crops of generated images with their "
        "cell masks, through pad_collate, made once), StepOptions(progress=False, log_every=0). One untimed epoch "
        f"of each, then {chosen.rounds} round(s) of one epoch of each, interleaved (order rotated); images/s per "
        "epoch, medians. Ratio (judged): the median over rounds of train_one_epoch's images/s / the plain loop's in "
        "the same round (a load change between rounds moves both epochs of a round alike; the last row gives its "
        "spread); in brackets the ratio of the two medians. Checked on every run: the two first epochs' mean "
        f"losses agree within {AGREEMENT:g} relative (here {difference:.1e}). Load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end.",
        "",
        *timing.HEADER,
        timing.row(
            "plain loop (smp examples: forward, F.binary_cross_entropy_with_logits, backward, AdamW step)",
            plain,
            "images/s",
            "1.00",
            digits=2,
        ),
        timing.row(
            "seg.engine.train_one_epoch (Criterion: weighting none, bce)",
            project,
            "images/s",
            f"{ratio:.3f} (medians: {project.median / plain.median:.3f})",
            f">= {MIN_RATIO}",
            ratio >= MIN_RATIO,
            digits=2,
        ),
        timing.row("train_one_epoch / plain loop, round by round", paired, "x", digits=3),
    ]
