"""Tests for seg/scoring/metrics.py: counts and scores worked out by hand, agreement with torchmetrics
and a plain NumPy loop, batch-size invariance, torch.compile without graph breaks."""

import json
import math
from fractions import Fraction as Fr

import numpy as np
import pytest
import torch
from conftest import random_case

from seg.scoring.metrics import (
    confusion_counts,
    dice_score,
    empty_image_fp_rate,
    iou_score,
    pixel_major,
    score_block,
    slot_counts,
    to_float,
)
from seg.scoring.thresholds import (
    logit_boundaries,
    probability_grid,
    threshold_histograms,
)

NAN = float("nan")


def logits_from(pred):
    """0/1 prediction -> logits +-5 (sigmoid 0.993 / 0.007)."""
    return torch.as_tensor(pred, dtype=torch.float32) * 10 - 5


def close(value, expected):
    value = float(value)
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(value)
    return value == pytest.approx(float(expected), abs=1e-12)


# ----------------------------------------------------------------- 2x2 by hand: N=2, C=2

# image 0, channel 0: truth [[1,1],[0,0]], pred [[1,0],[1,0]] -> tp 1 (0,0), fp 1 (1,0), fn 1 (0,1), tn 1
# image 0, channel 1: truth all 0, pred all 0                 -> tp 0, fp 0, fn 0, tn 4 (both empty)
# image 1, channel 0: truth all 1, pred [[1,1],[1,0]]         -> tp 3, fp 0, fn 1, tn 0
# image 1, channel 1: truth [[0,0],[0,1]], pred [[0,1],[0,1]] -> tp 1, fp 1, fn 0, tn 2
TRUTH_2 = [[[[1, 1], [0, 0]], [[0, 0], [0, 0]]], [[[1, 1], [1, 1]], [[0, 0], [0, 1]]]]
PRED_2 = [[[[1, 0], [1, 0]], [[0, 0], [0, 0]]], [[[1, 1], [1, 0]], [[0, 1], [0, 1]]]]
COUNTS_2 = [[[1, 1, 1, 1], [0, 0, 0, 4]], [[3, 0, 1, 0], [1, 1, 0, 2]]]

# Per image Dice 2tp/(2tp+fp+fn): (0,0) 2/4 = 1/2, (0,1) empty, (1,0) 6/7, (1,1) 2/3.
# Per image IoU tp/(tp+fp+fn):    (0,0) 1/3,       (0,1) empty, (1,0) 3/4, (1,1) 1/2.
# Dataset level: channel 0 tp 4 fp 1 fn 2 -> Dice 8/11, IoU 4/7; channel 1 tp 1 fp 1 fn 0 -> Dice 2/3, IoU 1/2.
# macro Dice (8/11 + 2/3)/2 = 23/33;  macro IoU (4/7 + 1/2)/2 = 15/28   (no dataset-level empties)
# micro: tp 5 fp 2 fn 2 -> Dice 10/14 = 5/7, IoU 5/9
# per_image (per channel the mean over images, then over channels); channel 0 Dice (1/2 + 6/7)/2 = 19/28,
#   IoU (1/3 + 3/4)/2 = 13/24; channel 1 depends on the empty policy for image 0:
#   nan:  Dice ch1 = 2/3           -> (19/28 + 2/3)/2 = 113/168;  IoU ch1 = 1/2 -> (13/24 + 1/2)/2 = 25/48
#   one:  Dice ch1 = (1 + 2/3)/2   -> (19/28 + 5/6)/2 = 127/168;  IoU (1 + 1/2)/2 = 3/4 -> 31/48
#   zero: Dice ch1 = (0 + 2/3)/2   -> (19/28 + 1/3)/2 = 85/168;   IoU 1/4 -> 19/48
HAND_2 = {
    ("dice", "micro"): {e: Fr(5, 7) for e in ("nan", "one", "zero")},
    ("iou", "micro"): {e: Fr(5, 9) for e in ("nan", "one", "zero")},
    ("dice", "macro"): {e: Fr(23, 33) for e in ("nan", "one", "zero")},
    ("iou", "macro"): {e: Fr(15, 28) for e in ("nan", "one", "zero")},
    ("dice", "per_image"): {"nan": Fr(113, 168), "one": Fr(127, 168), "zero": Fr(85, 168)},
    ("iou", "per_image"): {"nan": Fr(25, 48), "one": Fr(31, 48), "zero": Fr(19, 48)},
}
SCORES = {"dice": dice_score, "iou": iou_score}


def test_counts_2x2_by_hand():
    counts = confusion_counts(logits_from(PRED_2), torch.tensor(TRUTH_2, dtype=torch.float32))
    assert counts.dtype == torch.int64
    assert counts.tolist() == COUNTS_2


@pytest.mark.parametrize("empty", ["nan", "one", "zero"])
@pytest.mark.parametrize("metric,reduction", list(HAND_2))
def test_scores_2x2_by_hand(metric, reduction, empty):
    counts = torch.tensor(COUNTS_2)
    assert close(SCORES[metric](counts, reduction, empty), HAND_2[(metric, reduction)][empty])


def test_none_2x2_by_hand():
    counts = torch.tensor(COUNTS_2)
    assert dice_score(counts, "none").tolist() == pytest.approx([8 / 11, 2 / 3])
    assert iou_score(counts, "none").tolist() == pytest.approx([4 / 7, 1 / 2])


# --------------------------------------------------------- 4x4 by hand with ignore pixels

# One image, 2 channels, pixels (0,0) and (3,3) ignored (valid False): 14 valid pixels.
# channel 0: truth = the 2x2 block rows 0-1 x cols 0-1; pred = rows 0-1 x cols 1-2.
#   valid truth: (0,1) (1,0) (1,1) = 3; valid pred: (0,1) (0,2) (1,1) (1,2) = 4; tp (0,1) (1,1) = 2
#   -> tp 2, fp 2, fn 1, tn 14 - 5 = 9; Dice 4/7, IoU 2/5
# channel 1: truth only at (3,3), pred only at (0,0): both ignored -> tp 0, fp 0, fn 0, tn 14 (empty)
VALID_4 = torch.ones(1, 1, 4, 4, dtype=torch.bool)
VALID_4[0, 0, 0, 0] = VALID_4[0, 0, 3, 3] = False
TRUTH_4 = torch.zeros(1, 2, 4, 4)
TRUTH_4[0, 0, :2, :2] = 1
TRUTH_4[0, 1, 3, 3] = 1
PRED_4 = torch.zeros(1, 2, 4, 4)
PRED_4[0, 0, :2, 1:3] = 1
PRED_4[0, 1, 0, 0] = 1
COUNTS_4 = [[[2, 2, 1, 9], [0, 0, 0, 14]]]
# none: [4/7, fill] / [2/5, fill]; macro = mean over channels:
#   nan -> channel 1 left out: Dice 4/7, IoU 2/5; one -> (4/7 + 1)/2 = 11/14, (2/5 + 1)/2 = 7/10;
#   zero -> (4/7)/2 = 2/7, (2/5)/2 = 1/5. per_image equals macro (one image).
# micro: tp 2 fp 2 fn 1 pooled -> Dice 4/7, IoU 2/5 whatever the policy; channel 1 alone: empty -> fill.
FILL = {"nan": NAN, "one": 1.0, "zero": 0.0}
HAND_4 = {
    ("dice", "macro"): {"nan": Fr(4, 7), "one": Fr(11, 14), "zero": Fr(2, 7)},
    ("iou", "macro"): {"nan": Fr(2, 5), "one": Fr(7, 10), "zero": Fr(1, 5)},
    ("dice", "micro"): {e: Fr(4, 7) for e in FILL},
    ("iou", "micro"): {e: Fr(2, 5) for e in FILL},
}
HAND_4[("dice", "per_image")] = HAND_4[("dice", "macro")]
HAND_4[("iou", "per_image")] = HAND_4[("iou", "macro")]


def test_counts_4x4_with_ignore_by_hand():
    assert confusion_counts(logits_from(PRED_4), TRUTH_4, VALID_4).tolist() == COUNTS_4


@pytest.mark.parametrize("empty", list(FILL))
@pytest.mark.parametrize("metric,reduction", list(HAND_4))
def test_scores_4x4_by_hand(metric, reduction, empty):
    assert close(SCORES[metric](torch.tensor(COUNTS_4), reduction, empty), HAND_4[(metric, reduction)][empty])


@pytest.mark.parametrize("empty", list(FILL))
def test_none_and_empty_micro_4x4_by_hand(empty):
    counts = torch.tensor(COUNTS_4)
    dice, iou = dice_score(counts, "none", empty), iou_score(counts, "none", empty)
    assert close(dice[0], 4 / 7) and close(dice[1], FILL[empty])
    assert close(iou[0], 2 / 5) and close(iou[1], FILL[empty])
    assert close(dice_score(counts[:, 1:], "micro", empty), FILL[empty])  # all counts empty


def test_bad_arguments_are_refused():
    counts = torch.tensor(COUNTS_2)
    with pytest.raises(ValueError, match="reduction"):
        dice_score(counts, "mean")
    with pytest.raises(ValueError, match="empty"):
        iou_score(counts, "macro", "skip")
    with pytest.raises(ValueError, match=r"\[N,C,4\]"):
        dice_score(counts[0])
    with pytest.raises(ValueError, match="valid"):
        confusion_counts(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool))


def test_score_block_and_to_float():
    block = score_block(torch.tensor(COUNTS_4), ["a", "b"], "nan")
    assert block["dice"] == pytest.approx(4 / 7) and block["per_channel"]["b"] == {"dice": None, "iou": None}
    assert set(block) == {"dice", "iou", "micro", "per_image", "per_channel", "empty_image_fp_rate"}
    assert json.loads(json.dumps(block)) == block
    assert to_float(torch.tensor(NAN)) is None and to_float(torch.tensor(0.25)) == 0.25


def test_empty_image_fp_rate_by_hand():
    # channel 0: truth empty in images 0, 1, 2; something predicted (fp > 0) in image 1 only -> 1/3
    # channel 1: truth present in every image -> no empty image -> NaN (null)
    counts = torch.tensor(
        [
            [[0, 0, 0, 9], [1, 0, 0, 8]],
            [[0, 2, 0, 7], [1, 1, 0, 7]],
            [[0, 0, 0, 9], [2, 0, 1, 6]],
            [[3, 1, 0, 5], [1, 0, 0, 8]],
        ]
    )
    rate = empty_image_fp_rate(counts)
    assert close(rate[0], 1 / 3) and math.isnan(rate[1])


# ---------------------------------------------------------- independent implementations


def numpy_counts(logits, target, valid):
    """A plain loop: tp, fp, fn, tn per image and channel."""
    x, y = logits.numpy(), target.numpy()
    v = np.ones_like(x[:, :1], dtype=bool) if valid is None else valid.numpy()
    out = np.zeros((*x.shape[:2], 4), dtype=np.int64)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            p, t, m = x[i, c] > 0, y[i, c] >= 0.5, v[i, 0]
            out[i, c] = [np.sum(p & t & m), np.sum(p & ~t & m), np.sum(~p & t & m), np.sum(~p & ~t & m)]
    return out


def numpy_scores(counts, metric, reduction, empty):
    """Dice/IoU reductions by loops over a [N,C,4] array; NaN left out of means."""
    fill = FILL[empty]

    def score(tp, fp, fn):
        denominator = (2 * tp + fp + fn) if metric == "dice" else (tp + fp + fn)
        return fill if denominator == 0 else ((2 * tp) if metric == "dice" else tp) / denominator

    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else NAN

    n, c = counts.shape[:2]
    if reduction == "micro":
        tp, fp, fn, _ = counts.sum(axis=(0, 1))
        return score(tp, fp, fn)
    if reduction == "per_image":
        return mean([mean([score(*counts[i, k, :3]) for i in range(n)]) for k in range(c)])
    per_channel = [score(*counts[:, k, :3].sum(axis=0)) for k in range(c)]
    return per_channel if reduction == "none" else mean(per_channel)


def torchmetrics_scores(prob, labels, zero_division):
    """Counts and scores from torchmetrics: the binary API for [B,1,H,W], multilabel for [B,C,H,W].
    Returns (counts [N,C,4], F1 = Dice per channel, IoU per channel, micro F1, F1 per image [N,C]).
    Imported here, not at the top: the DDP test's worker processes import this module."""
    import torchmetrics.functional.classification as tmf

    c = prob.shape[1]
    if c == 1:
        p, t = prob[:, 0], labels[:, 0]
        stats = tmf.binary_stat_scores(p, t, multidim_average="samplewise", ignore_index=-1)[:, None]
        f1 = tmf.binary_f1_score(p, t, ignore_index=-1, zero_division=zero_division)[None]
        iou = tmf.binary_jaccard_index(p, t, ignore_index=-1, zero_division=zero_division)[None]
        per_image = tmf.binary_f1_score(
            p, t, multidim_average="samplewise", ignore_index=-1, zero_division=zero_division
        )[:, None]
        return stats, f1, iou, f1[0], per_image
    args = dict(num_labels=c, ignore_index=-1)
    stats = tmf.multilabel_stat_scores(prob, labels, average=None, multidim_average="samplewise", **args)
    f1 = tmf.multilabel_f1_score(prob, labels, average=None, zero_division=zero_division, **args)
    iou = tmf.multilabel_jaccard_index(prob, labels, average=None, zero_division=zero_division, **args)
    micro = tmf.multilabel_f1_score(prob, labels, average="micro", **args)
    per_image = tmf.multilabel_f1_score(
        prob, labels, average=None, multidim_average="samplewise", zero_division=zero_division, **args
    )
    return stats, f1, iou, micro, per_image


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_counts_and_scores_agree_with_torchmetrics(channels, ignore):
    logits, target, valid = random_case(channels * 10 + ignore, c=channels, ignore=ignore)
    counts = confusion_counts(logits, target, valid)
    prob = torch.sigmoid(logits)
    labels = target.long()
    if valid is not None:
        labels = torch.where(valid, labels, -1)  # valid [N,1,H,W] broadcasts over channels
    for empty, zero_division in (("zero", 0), ("one", 1)):
        stats, f1, iou, micro, per_image = torchmetrics_scores(prob, labels, zero_division)
        assert torch.equal(counts, stats[..., [0, 1, 3, 2]])  # torchmetrics: tp, fp, tn, fn, support
        assert dice_score(counts, "none", empty).numpy() == pytest.approx(f1.double().numpy(), abs=1e-6)
        assert iou_score(counts, "none", empty).numpy() == pytest.approx(iou.double().numpy(), abs=1e-6)
        assert float(dice_score(counts, "micro", empty)) == pytest.approx(float(micro), abs=1e-6)
        # per_image: mean over images per channel, then over channels (equal counts: the plain mean)
        assert float(dice_score(counts, "per_image", empty)) == pytest.approx(
            float(per_image.double().mean()), abs=1e-6
        )


@pytest.mark.parametrize("empty", list(FILL))
@pytest.mark.parametrize("reduction", ["micro", "macro", "per_image", "none"])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_reductions_agree_with_numpy_loop(channels, ignore, reduction, empty):
    logits, target, valid = random_case(100 + channels, c=channels, ignore=ignore)
    counts = confusion_counts(logits, target, valid)
    assert counts.numpy().tolist() == numpy_counts(logits, target, valid).tolist()
    for metric, fn in SCORES.items():
        expected = numpy_scores(counts.numpy(), metric, reduction, empty)
        got = fn(counts, reduction, empty)
        np.testing.assert_allclose(got.numpy(), np.array(expected, dtype=np.float64), atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_accumulating_over_batches_equals_one_pass(batch_size):
    # Invariance: counts add up over batches, so every reduction is independent of the batch size.
    logits, target, valid = random_case(7, n=10, c=2)
    whole = confusion_counts(logits, target, valid)
    parts = [
        confusion_counts(logits[i : i + batch_size], target[i : i + batch_size], valid[i : i + batch_size])
        for i in range(0, 10, batch_size)
    ]
    running = torch.zeros(2, 4, dtype=torch.long)
    for part in parts:
        running += part.sum(dim=0)
    accumulated = torch.cat(parts)
    assert torch.equal(accumulated, whole) and torch.equal(running, whole.sum(dim=0))
    for reduction in ("micro", "macro", "per_image"):
        assert float(dice_score(accumulated, reduction)) == float(dice_score(whole, reduction))
    if batch_size == 3:  # the trap: a mean of per-batch macro Dice is not the dataset-level Dice
        batch_means = torch.stack([dice_score(p, "macro") for p in parts]).mean()
        assert abs(float(batch_means) - float(dice_score(whole, "macro"))) > 1e-4


# ------------------------------------------------------------------------ layout and slot counting


def test_pixel_major_order_and_slot_counts():
    # pixel-major: (image, row, column, channel), the memory order of channels_last (there, a view)
    x = torch.arange(2 * 3 * 2 * 2).view(2, 3, 2, 2)
    expected = [int(x[n, c, h, w]) for n in range(2) for h in range(2) for w in range(2) for c in range(3)]
    assert pixel_major(x).tolist() == expected
    last = x.contiguous(memory_format=torch.channels_last)
    assert pixel_major(last).tolist() == expected and pixel_major(last).data_ptr() == last.data_ptr()
    slots = torch.tensor([0, 4, 4, 2, 0, 4], dtype=torch.int32)
    assert slot_counts(slots, 6).tolist() == [2, 0, 1, 0, 3, 0] and slot_counts(slots.long(), 6).dtype == torch.long


# ------------------------------------------------------------------------ torch.compile


def test_confusion_counts_compiles_without_graph_breaks():
    logits, target, valid = random_case(5)
    compiled = torch.compile(confusion_counts, fullgraph=True, backend="eager")
    log_q = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    assert torch.equal(compiled(logits, target, valid, log_q), confusion_counts(logits, target, valid, log_q))
    boundaries = logit_boundaries(probability_grid(0.1))
    hist = torch.compile(threshold_histograms, fullgraph=True, backend="eager")(logits, target, valid, boundaries)
    assert torch.equal(hist, threshold_histograms(logits, target, valid, boundaries))
