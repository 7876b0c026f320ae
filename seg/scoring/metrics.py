"""Dice and IoU in two layers: integer counts on the device, then scores.

Counting: :func:`confusion_counts` gives tp, fp, fn, tn per image and channel as
an int64 tensor [N, C, 4]. Counts are summed across batches on the device, with no
host synchronisation, and combined across DDP ranks as counts, never ratios
(:mod:`seg.distributed`).

Scoring: :func:`dice_score` / :func:`iou_score` with an explicit reduction, in
segmentation_models_pytorch's meanings:

- ``micro``: counts pooled over images and channels, one score;
- ``macro``: per channel, counts summed over images (dataset-level score), then the
  mean over channels;
- ``per_image``: a score per image and channel; per channel the mean over images,
  then the mean over channels (smp's ``macro-imagewise``);
- ``none``: the dataset-level score per channel, shape (C,).

``empty`` decides the score where ground truth and prediction are both empty
(tp + fp + fn == 0): ``nan`` (left out of every mean, as nnU-Net), ``one`` or ``zero``.

Many thresholds at once (histograms of logits, tuned thresholds): :mod:`seg.scoring.thresholds`.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("micro", "macro", "per_image", "none")
EMPTY_POLICIES = ("nan", "one", "zero")
TP, FP, FN, TN = range(4)


# ------------------------------------------------------------------------ counting


def check_shapes(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> None:
    shape = tuple(logits.shape)
    if logits.dim() != 4 or target.shape != logits.shape:
        raise ValueError(f"logits and target must both be [N,C,H,W]; got {shape} and {tuple(target.shape)}")
    if valid is not None and (
        valid.dim() != 4
        or valid.shape[1] not in (1, shape[1])
        or valid.shape[0] != shape[0]
        or valid.shape[2:] != logits.shape[2:]
    ):
        raise ValueError(f"valid must be [N,1,H,W] or [N,C,H,W] for logits {shape}; got {tuple(valid.shape)}")


def pixel_major(tensor: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] -> 1-D in (image, row, column, channel) order: a view of a channels_last tensor (the model's
    output layout), a copy otherwise. Each channel's pixels keep their (image, row, column) order."""
    return tensor.permute(0, 2, 3, 1).reshape(-1)


def slot_counts(slots: torch.Tensor, size: int) -> torch.Tensor:
    """How often each of 0..size-1 occurs in the integer tensor ``slots`` (1-D, every value below ``size``):
    int64 (size,). No host synchronisation: on CUDA a scatter (``torch.bincount`` reads the largest value
    back to the host there), on the CPU ``bincount``, which needs no tensor of ones."""
    if slots.device.type == "cpu":
        return torch.bincount(slots, minlength=size)
    ones = torch.ones(slots.numel(), dtype=torch.long, device=slots.device)
    return torch.zeros(size, dtype=torch.long, device=slots.device).scatter_add_(0, slots.long(), ones)


def confusion_counts(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    logit_threshold: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """tp, fp, fn, tn per image and channel: int64 [N, C, 4].

    logits [N,C,H,W]; target [N,C,H,W] (soft labels count as positive at >= 0.5);
    valid [N,1,H,W] (or [N,C,H,W]) bool, False pixels are left out of every count;
    logit_threshold: a float or a (C,1,1) tensor; a pixel is predicted positive
    where logit > threshold (0.0 is probability 0.5).
    """
    check_shapes(logits, target, valid)
    pred = logits > logit_threshold
    truth = target >= 0.5
    pixels: torch.Tensor | int
    if valid is None:
        pixels = logits.shape[2] * logits.shape[3]
    else:
        valid = valid.bool()
        pred, truth = pred & valid, truth & valid
        pixels = valid.sum(dim=(2, 3))  # [N,1] or [N,C]
    tp = (pred & truth).sum(dim=(2, 3))
    fp = pred.sum(dim=(2, 3)) - tp
    fn = truth.sum(dim=(2, 3)) - tp
    tn = pixels - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=-1)


# ------------------------------------------------------------------------- scores


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor, empty: str) -> torch.Tensor:
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    fill = {"nan": float("nan"), "one": 1.0, "zero": 0.0}[empty]
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.full_like(numerator, fill))


def _reduce(counts: torch.Tensor, reduction: str, score_fn) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if counts.dim() != 3 or counts.shape[-1] != 4:
        raise ValueError(f"counts must be [N,C,4] (tp, fp, fn, tn); got {tuple(counts.shape)}")
    if reduction == "micro":
        return score_fn(counts.sum(dim=(0, 1)))
    if reduction == "per_image":
        return score_fn(counts).nanmean(dim=0).nanmean()
    per_channel = score_fn(counts.sum(dim=0))
    return per_channel if reduction == "none" else per_channel.nanmean()


def dice_from_counts(counts: torch.Tensor, empty: str = "nan") -> torch.Tensor:
    """Dice = 2tp / (2tp + fp + fn) elementwise over counts [..., 4] -> [...] float64."""
    tp, fp, fn = counts[..., TP], counts[..., FP], counts[..., FN]
    return _ratio(2 * tp, 2 * tp + fp + fn, empty)


def iou_from_counts(counts: torch.Tensor, empty: str = "nan") -> torch.Tensor:
    """IoU = tp / (tp + fp + fn) elementwise over counts [..., 4] -> [...] float64."""
    tp, fp, fn = counts[..., TP], counts[..., FP], counts[..., FN]
    return _ratio(tp, tp + fp + fn, empty)


def dice_score(counts: torch.Tensor, reduction: str = "macro", empty: str = "nan") -> torch.Tensor:
    """Dice from counts [N,C,4] (float64): () for micro/macro/per_image, (C,) for none."""
    return _reduce(counts, reduction, lambda c: dice_from_counts(c, empty))


def iou_score(counts: torch.Tensor, reduction: str = "macro", empty: str = "nan") -> torch.Tensor:
    """IoU from counts [N,C,4] (float64): () for micro/macro/per_image, (C,) for none."""
    return _reduce(counts, reduction, lambda c: iou_from_counts(c, empty))


def to_float(value: torch.Tensor | float) -> float | None:
    """A 0-d score as a plain float, NaN as None (JSON null)."""
    number = float(value)
    return None if number != number else number


def empty_image_fp_rate(counts: torch.Tensor) -> torch.Tensor:
    """(C,) float64: among images whose ground truth is empty in a channel (tp + fn == 0
    over valid pixels), the fraction where anything is predicted (fp > 0); NaN where the
    channel has no empty image. counts [N,C,4] at one threshold."""
    empty_truth = (counts[..., TP] + counts[..., FN]) == 0
    false_alarm = empty_truth & (counts[..., FP] > 0)
    return _ratio(false_alarm.sum(dim=0), empty_truth.sum(dim=0), "nan")


def score_block(counts: torch.Tensor, class_names: list[str], empty: str) -> dict:
    """The summary block for one threshold, from per-image counts [N,C,4]:

    dice, iou (macro), micro {dice, iou}, per_image {dice, iou},
    per_channel {name: {dice, iou}} (dataset-level), empty_image_fp_rate {name: x}.
    """
    if counts.shape[1] != len(class_names):
        raise ValueError(f"counts have {counts.shape[1]} channels but {len(class_names)} class names were given")
    counts = counts.cpu()
    dice, iou = dice_score(counts, "none", empty), iou_score(counts, "none", empty)
    fp_rate = empty_image_fp_rate(counts)
    return {
        "dice": to_float(dice.nanmean()),
        "iou": to_float(iou.nanmean()),
        "micro": {
            "dice": to_float(dice_score(counts, "micro", empty)),
            "iou": to_float(iou_score(counts, "micro", empty)),
        },
        "per_image": {
            "dice": to_float(dice_score(counts, "per_image", empty)),
            "iou": to_float(iou_score(counts, "per_image", empty)),
        },
        "per_channel": {
            name: {"dice": to_float(dice[c]), "iou": to_float(iou[c])} for c, name in enumerate(class_names)
        },
        "empty_image_fp_rate": {name: to_float(fp_rate[c]) for c, name in enumerate(class_names)},
    }
