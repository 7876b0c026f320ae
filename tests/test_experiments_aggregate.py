"""Tests for seg/experiments/aggregate.py: means, t intervals and paired differences worked out by hand."""

import dataclasses
import math

import pytest

from seg.experiments.aggregate import aggregate, curve_change, find, paired_difference, t_interval
from seg.results import RunSummary

T_975 = {1: 12.706205, 2: 4.302653}  # Student t quantiles t_{0.975, df} from a printed table


def test_t_interval_matches_the_formula_by_hand():
    # mean 0.7, sd = sqrt((0.01 + 0 + 0.01) / 2) = 0.1, half-width = t_{0.975,2} * 0.1 / sqrt(3)
    interval = t_interval([0.6, 0.7, 0.8])
    assert (interval.n, interval.mean, interval.sd) == (3, pytest.approx(0.7), pytest.approx(0.1))
    assert interval.half_width == pytest.approx(T_975[2] * 0.1 / math.sqrt(3), rel=1e-6)  # 0.248414
    assert t_interval([0.5, None, float("nan")]).n == 1  # missing values are left out ...
    assert t_interval([0.5]).half_width is None  # ... and one value has no interval


def _summary(dice: float, speck: float | None, ece: float, q: list[float], seconds: float) -> RunSummary:
    """A summary.json as fit() writes it; what the aggregation does not read is a placeholder (null where
    a value may be null), and prior_corrected is absent from by_threshold and null in the ECE block."""
    pair = {"dice": None, "iou": None}
    block = {
        "dice": dice,
        "iou": dice / (2 - dice),
        "micro": pair,
        "per_image": pair,
        "per_channel": {"cell": {"dice": 0.9, "iou": 0.8}, "speck": {"dice": speck, "iou": None}},
        "empty_image_fp_rate": {"cell": None, "speck": None},
        "thresholds": {"cell": 0.5, "speck": 0.5},
    }
    return RunSummary.from_dict(
        {
            "best_epoch": 1,
            "epochs_completed": 1,
            "weighting": "none",
            "apply_as": "pos_weight",
            "normalize": True,
            "negatives": "pixels",
            "pos_weight": None,
            "effective_pos_weight": q,
            "mean_applied_weight": 1.0,
            "val": {
                **block,
                "threshold": "0.5",
                "empty_policy": "nan",
                "num_images": 3,
                "by_threshold": {"0.5": block, "tuned": {**block, "dice": dice + 0.1}},
                "ece": {
                    "bins": 15,
                    "raw": {"cell": ece, "speck": ece},
                    "raw_mean": ece,
                    "prior_corrected": {"cell": None, "speck": None},
                    "prior_corrected_mean": None,
                },
            },
            "train": {"loss": 0.5, "dice": 0.5},
            "wall_time_per_epoch_s": seconds,
            "stats_source": "training split",
        }
    )


RUNS = {
    "none": {
        0: _summary(0.50, 0.10, 0.20, [1.0, 1.0], 10.0),
        1: _summary(0.60, 0.20, 0.30, [1.0, 1.0], 12.0),
        2: _summary(0.55, None, 0.25, [1.0, 1.0], 14.0),
    },
    "global": {
        0: _summary(0.58, 0.30, 0.10, [2.0, 400.0], 11.0),
        1: _summary(0.66, 0.40, 0.10, [2.2, 410.0], 13.0),
        2: _summary(0.64, 0.50, 0.10, [2.4, 420.0], 15.0),
    },
}


def test_aggregate_means_intervals_and_paired_differences_by_hand():
    rows = aggregate(RUNS, ["cell", "speck"], reference="none")
    row = find(rows, "global", "dice", "0.5", "macro")
    # global: 0.58, 0.66, 0.64 -> mean 0.626667; deviations -0.046667, 0.033333, 0.013333;
    # sd = sqrt((0.0021778 + 0.0011111 + 0.0001778) / 2) = 0.041633
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.626667, abs=1e-6)
    assert row["sd"] == pytest.approx(0.041633, abs=1e-6)
    half = T_975[2] * 0.041633 / math.sqrt(3)  # 0.103422
    assert (row["ci_low"], row["ci_high"]) == (
        pytest.approx(0.626667 - half, abs=1e-5),
        pytest.approx(0.626667 + half, abs=1e-5),
    )
    # paired by seed: differences 0.08, 0.06, 0.09 -> mean 0.076667, sd 0.015275, half 0.037946
    assert row["diff_n"] == 3 and row["diff_mean"] == pytest.approx(0.076667, abs=1e-6)
    assert row["diff_ci_high"] - row["diff_mean"] == pytest.approx(T_975[2] * 0.015275 / math.sqrt(3), abs=1e-5)
    # speck Dice is null for none at seed 2: none has n = 2 (mean 0.15, sd 0.070711), pairs over seeds 0 and 1
    speck_none, speck_global = find(rows, "none", "dice", "0.5", "speck"), find(rows, "global", "dice", "0.5", "speck")
    assert speck_none["n"] == 2 and speck_none["mean"] == pytest.approx(0.15)
    assert speck_none["ci_high"] - 0.15 == pytest.approx(T_975[1] * 0.070711 / math.sqrt(2), abs=1e-5)  # 0.635310
    assert speck_global["diff_n"] == 2 and speck_global["diff_mean"] == pytest.approx(0.2)  # 0.2, 0.2: sd 0
    assert speck_global["diff_ci_low"] == pytest.approx(0.2) and speck_global["diff_ci_high"] == pytest.approx(0.2)
    assert find(rows, "none", "dice", "0.5", "macro")["diff_n"] is None  # the reference is not paired with itself
    # the tuned block is read from by_threshold; prior_corrected is absent in these summaries: no row
    assert find(rows, "none", "dice", "tuned", "macro")["mean"] == pytest.approx(0.65)
    assert find(rows, "none", "dice", "prior_corrected", "macro") is None
    assert find(rows, "none", "iou", "0.5", "speck") is None  # null in every run
    ece = find(rows, "global", "ece", "raw", "macro")  # 0.1 - (0.2, 0.3, 0.25) -> -0.15
    assert ece["mean"] == pytest.approx(0.1) and ece["diff_mean"] == pytest.approx(-0.15)
    assert find(rows, "global", "effective_pos_weight", "", "speck")["mean"] == pytest.approx(410.0)
    assert find(rows, "global", "wall_time_per_epoch_s")["mean"] == pytest.approx(13.0)


def test_paired_difference_pairs_by_seed_not_by_position():
    interval = paired_difference({0: 0.5, 1: 0.7, 5: 0.9}, {1: 0.6, 0: 0.4, 2: 0.1})  # seeds 0, 1: +0.1, +0.1
    assert (interval.n, interval.mean, interval.sd) == (2, pytest.approx(0.1), pytest.approx(0.0))


def test_curve_change_is_the_range_over_the_last_fifth_of_the_epochs():
    """10 epochs: k = ceil(0.2 * 10) = 2, so epochs 8, 9 and 10 (the last 2 and the one before them)."""
    curve = [0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.78, 0.80, 0.83, 0.81]
    summary = dataclasses.replace(RUNS["none"][0], val_dice_curve={"tuned": curve, "0.5": [0.2, None]})
    assert curve_change(summary, "tuned") == pytest.approx(0.83 - 0.80)
    assert curve_change(summary, "0.5") is None  # one finite value: no change to measure
    assert curve_change(RUNS["none"][0], "tuned") is None  # not recorded
    three = dataclasses.replace(RUNS["none"][0], val_dice_curve={"tuned": [0.2, 0.5, 0.4]})  # k = 1: last two
    assert curve_change(three, "tuned") == pytest.approx(0.1)
