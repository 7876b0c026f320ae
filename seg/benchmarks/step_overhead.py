"""Benchmark: what each weighting strategy and each loss term adds to a training step.

Whole-step differences of a few percent drown in the noise of a shared machine, so the loss is timed alone:
the strategy's weight for the batch, the criterion's forward and its backward, on fixed logits (a leaf tensor
with the model output's shape, dtype and memory format), as a share of the median whole training step
(forward, the project's loss with weighting none, backward, AdamW step) of smp.Unet on the same batch. The
loss-only variants run interleaved (:func:`seg.benchmarks.timing.interleave`) between whole steps, so that a
load change on the machine hits both. border_map's border term arrives with the batch (``weight_map``), as
the dataset's cached per-sample map gives it in training.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seg.benchmarks import timing
from seg.benchmarks.criteria import project_criterion
from seg.config import MaskSpec
from seg.data.counts import MaskCounts
from seg.losses import Criterion
from seg.weighting.border import border_weight_map, connected_instances

NAME = "step_overhead"
TARGET = (
    "weight + loss forward and backward on fixed logits, as a share of the median whole training step "
    "(resnet18 Unet, batch 8, 256 px, C = 1 and 5, CPU): <= 3% for weighting none, global, per_channel and "
    "per_batch; <= 10% for class_map and border_map (cached border term); <= 5% for a dice, focal or tversky term "
    "alone"
)
STRATEGY_LIMITS = {
    "none": 0.03,
    "global": 0.03,
    "per_channel": 0.03,
    "per_batch": 0.03,
    "class_map": 0.10,
    "border_map": 0.10,
}
TERM_LIMITS: dict[str, float | None] = {"dice": 0.05, "focal": 0.05, "tversky": 0.05, "lovasz": None}
CHANNELS = (1, 5)
FRACTIONS = (0.3, 0.1, 0.03, 0.01, 0.003)  # channel c is positive on about FRACTIONS[c] of the pixels


@dataclass(frozen=True)
class Size:
    encoders: tuple[str, ...]  # the first one's whole step is what the targets are judged against
    batch: int
    side: int
    rounds: int  # each: one whole step per encoder, then loss_repeats loss-only calls of every variant
    loss_repeats: int


SIZES = {
    "full": Size(("resnet18", "resnet34"), 8, 256, 10, 3),
    "quick": Size(("resnet18",), 8, 256, 3, 2),
    "tiny": Size(("resnet18",), 2, 64, 1, 1),
}


def make_batch(channels: int, batch: int, side: int, seed: int = 0) -> dict:
    """A batch as the dataset and pad_collate give it: ``image`` [B,3,H,W], ``target`` [B,C,H,W] in {0,1}
    (channel c on about FRACTIONS[c] of the pixels, in blobs), ``valid`` [B,1,H,W] (the last image's bottom
    rows ignored, as padding) and ``weight_map`` [B,1,H,W]: the border term of channel 0's connected
    components (w0 = 10, sigma = 5), as border_map's per-sample map."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((batch, channels, side // 16 + 1, side // 16 + 1)))
    field = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    target = torch.stack(
        [field[:, c] > torch.quantile(field[:, c].flatten(), 1.0 - FRACTIONS[c]) for c in range(channels)], dim=1
    ).float()
    valid = torch.ones(batch, 1, side, side, dtype=torch.bool)
    valid[-1, :, side - side // 8 :] = False
    border = [border_weight_map(connected_instances(t[0].numpy() > 0)) for t in target]
    return {
        "image": torch.from_numpy(rng.standard_normal((batch, 3, side, side), dtype=np.float32)),
        "target": target,
        "valid": valid,
        "weight_map": torch.from_numpy(np.stack(border))[:, None],
        "index": torch.arange(batch),
    }


def criteria(batch: dict) -> dict[str, Criterion]:
    """Every variant timed: each strategy with the bce term, then each term alone and bce + term (weighting
    none), built from the batch's own counts (binary masks for C = 1, multilabel for C > 1)."""
    target, valid = batch["target"], batch["valid"]
    channels = target.shape[1]
    spec = (
        MaskSpec("binary", ("c0",), (255,))
        if channels == 1
        else MaskSpec("multilabel", tuple(f"c{c}" for c in range(channels)))
    )
    counts = MaskCounts(
        channels,
        positive_pixels=(target * valid).sum(dim=(0, 2, 3)).long().numpy(),
        valid_pixels=int(valid.sum()),
        total_pixels=valid.numel(),
        all_zero_pixels=int(((target.amax(dim=1, keepdim=True) == 0) & valid).sum()),
    )
    out = {name: project_criterion(name, ["bce"], counts, spec) for name in STRATEGY_LIMITS}
    for name in TERM_LIMITS:
        out[name] = project_criterion("none", [name], counts, spec)
        out[f"bce+{name}"] = project_criterion("none", ["bce", name], counts, spec)
    return out


def loss_only(criterion: Criterion, logits: torch.Tensor, batch: dict, last: dict) -> Callable[[], None]:
    """One call: the strategy's weight, the criterion's forward and backward into the leaf ``logits``; the
    loss is kept in ``last["loss"]``."""

    def call() -> None:
        logits.grad = None
        loss, _, _ = criterion(logits, batch)
        loss.backward()
        last["loss"] = loss.detach()

    return call


def plain_bce(logits: torch.Tensor, batch: dict, last: dict) -> Callable[[], None]:
    """The floor, for information: F.binary_cross_entropy_with_logits (its mean, no mask), forward and backward."""

    def call() -> None:
        logits.grad = None
        loss = F.binary_cross_entropy_with_logits(logits, batch["target"])
        loss.backward()
        last["loss"] = loss.detach()

    return call


def masked_mean_bce(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """The mean BCE over valid elements, written independently of seg.losses."""
    mask = batch["valid"].float().expand_as(logits)
    return (F.binary_cross_entropy_with_logits(logits, batch["target"], reduction="none") * mask).sum() / mask.sum()


def check_variants(variants: dict[str, Callable[[], None]], logits: torch.Tensor, last: dict) -> None:
    """Call each variant once (the warm-up): its loss must be finite, its gradient a finite, non-zero tensor of
    the logits' shape; RuntimeError naming the variant otherwise."""
    for name, call in variants.items():
        call()
        grad = logits.grad
        if not torch.isfinite(last["loss"]):
            raise RuntimeError(f"{name}: non-finite loss {float(last['loss'])}")
        if grad is None or grad.shape != logits.shape or not bool(torch.isfinite(grad).all() and grad.any()):
            raise RuntimeError(f"{name}: no finite, non-zero gradient of the logits' shape")


def measure(channels: int, size: Size) -> tuple[dict[str, timing.Spread], dict[str, timing.Spread], float]:
    """Seconds of a whole step per encoder and of each loss-only variant; and the whole step's loss (first
    encoder, first step) relative to an independent masked mean BCE (1.0 when they agree)."""
    import segmentation_models_pytorch as smp

    batch = make_batch(channels, size.batch, size.side)
    images = batch["image"].contiguous(memory_format=torch.channels_last)
    variants_criteria = criteria(batch)
    step_loss = variants_criteria["none"]  # the project's loss: weighting none, bce
    steps: dict[str, Callable[[], object]] = {}
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for encoder in size.encoders:
        torch.manual_seed(0)
        model = smp.Unet(encoder, encoder_weights=None, classes=channels).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def whole_step(model=model, optimizer=optimizer, encoder=encoder) -> None:
            optimizer.zero_grad(set_to_none=True)
            logits = model(images)
            loss, _, _ = step_loss(logits, batch)
            loss.backward()
            optimizer.step()
            outputs[encoder] = logits.detach(), loss.detach()

        whole_step()  # warm-up
        steps[encoder] = whole_step
    model_out, step_value = outputs[size.encoders[0]]
    agreement = float(step_value / masked_mean_bce(model_out, batch))
    logits = model_out.clone().requires_grad_()  # the output's shape, dtype and memory format (channels_last)
    last: dict[str, torch.Tensor] = {}
    variants = {name: loss_only(c, logits, batch, last) for name, c in variants_criteria.items()}
    variants["plain"] = plain_bce(logits, batch, last)
    check_variants(variants, logits, last)  # and the warm-up
    step_values: dict[str, list[float]] = {name: [] for name in steps}
    loss_values: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(size.rounds):
        shift = round_ % len(size.encoders)
        order = size.encoders[shift:] + size.encoders[:shift]
        for name, spread in timing.interleave({e: steps[e] for e in order}, repeats=1, warmup=0).items():
            step_values[name] += spread.values
        for name, spread in timing.interleave(variants, size.loss_repeats, warmup=0).items():
            loss_values[name] += spread.values
    return (
        {name: timing.Spread.of(v) for name, v in step_values.items()},
        {name: timing.Spread.of(v) for name, v in loss_values.items()},
        agreement,
    )


def table_rows(channels: int, steps: dict[str, timing.Spread], losses: dict[str, timing.Spread]) -> list[str]:
    """The rows of one channel count: whole steps (information), then each variant as a share of them."""
    judged, *others = steps

    def share(spread: timing.Spread) -> str:
        text = f"{spread.median / steps[judged].median:.2%}"
        return text + "".join(f" ({o}: {spread.median / steps[o].median:.2%})" for o in others)

    def loss_row(method: str, name: str, limit: float | None) -> str:
        spread = losses[name].scaled(1e3)
        passed = None if limit is None else losses[name].median <= limit * steps[judged].median
        return timing.row(method, spread, "ms", share(losses[name]), f"<= {limit:.0%}" if limit else "", passed, 2)

    rows = [timing.row(f"whole step, {e}, C={channels}", steps[e].scaled(1e3), "ms") for e in steps]
    rows.append(loss_row(f"plain mean BCE (F.binary_cross_entropy_with_logits), C={channels}", "plain", None))
    rows += [loss_row(f"weighting {n} (bce), C={channels}", n, limit) for n, limit in STRATEGY_LIMITS.items()]
    rows += [loss_row(f"{n} alone, C={channels}", n, limit) for n, limit in TERM_LIMITS.items()]
    rows += [loss_row(f"bce + {n}, C={channels}", f"bce+{n}", None) for n in TERM_LIMITS]
    return rows


def run(size: str) -> list[str]:
    chosen = SIZES[size]
    rows, agreement = [], []
    for channels in CHANNELS:
        steps, losses, ratio = measure(channels, chosen)
        if abs(ratio - 1.0) > 1e-5:
            raise RuntimeError(f"C={channels}: the whole step's loss is {ratio:.8f} x an independent masked mean BCE")
        agreement.append(ratio)
        rows += table_rows(channels, steps, losses)
    encoders = " and ".join(chosen.encoders)
    repeats = chosen.rounds * chosen.loss_repeats
    return [
        f"CPU, {torch.get_num_threads()} torch threads (the default). Whole step: smp.Unet({encoders}, "
        f"encoder_weights=None, classes=C), model and input channels_last, batch {chosen.batch}, {chosen.side} px, "
        "forward + Criterion (weighting none, bce) + backward + AdamW step. Loss-only: the strategy's weight for "
        "the batch + the criterion's forward and backward on fixed logits (a leaf copy of the model output: "
        "float32, channels_last); every strategy with the bce term, each term alone and bce + term with weighting "
        "none; border_map's border term arrives with the batch (weight_map) as the dataset's cached map gives it. "
        f"Targets of {' and '.join(f'{c}' for c in CHANNELS)} channels (positives on "
        f"{', '.join(f'{f:.1%}' for f in FRACTIONS)} of the pixels by channel, in blobs), one image's bottom "
        f"eighth ignored. {chosen.rounds} round(s) after one warm-up call of each: a whole step of each encoder "
        f"(order rotated), then {chosen.loss_repeats} loss-only call(s) of every variant interleaved "
        f"(timing.interleave); medians of {chosen.rounds} whole step(s) and {repeats} loss-only call(s). Ratio: the "
        f"share of the median {chosen.encoders[0]} whole step (the shorter one: the targets are judged on it)"
        + (f"; of the {', '.join(chosen.encoders[1:])} step in brackets" if len(chosen.encoders) > 1 else "")
        + ". Checked on every run: each variant's loss and gradient are finite (the gradient non-zero, of the "
        "logits' shape); the whole step's loss equals an independent masked mean BCE (ratio "
        f"{', '.join(f'{r:.7f}' for r in agreement)}). Load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs at the end.",
        "",
        *timing.HEADER,
        *rows,
    ]
