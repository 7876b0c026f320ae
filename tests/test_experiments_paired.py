"""Tests for seg/experiments/paired.py: paired statistics over images, checked against hand numbers and against
independent plain-loop implementations of the same definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from seg.experiments.paired import (
    ImageComparison,
    bootstrap_interval,
    compare_arms,
    compare_images,
    format_comparison,
    holm,
    seed_mean_per_image,
    wilcoxon_p,
)

RESAMPLES = 2000


def _scores(values: list[float], prefix: str = "img") -> dict[str, float]:
    """``{img00: values[0], img01: values[1], ...}`` (zero-padded so the sorted stem order is the list order)."""
    return {f"{prefix}{i:02d}": v for i, v in enumerate(values)}


# ------------------------------------------------------------------ holm


def _holm_statsmodels_loop(p_values: list[float]) -> list[float]:
    """statsmodels' multipletests(method="holm") written out: sort ascending, multiply p_(i) by m - i (i from
    0), running maximum, values above 1 set to 1, back to the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, p_values[i] * (m - rank))
        adjusted[i] = 1.0 if running > 1 else running
    return adjusted


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # 2 * 0.5 = 1.0 and max(1.0, 0.6) = 1.0: capped at 1
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert holm([0.7, 0.8]) == pytest.approx([1.0, 1.0])  # 2 * 0.7 = 1.4 -> 1
    assert holm([0.02]) == pytest.approx([0.02])  # one test: unchanged
    assert holm([]) == []


def test_holm_leaves_none_out_of_the_count():
    adjusted = holm([None, 0.01, None, 0.04, 0.03])
    assert adjusted[0] is None and adjusted[2] is None
    assert [adjusted[1], adjusted[3], adjusted[4]] == pytest.approx([0.03, 0.06, 0.06])  # m = 3, not 5
    assert holm([None, None]) == [None, None]


def test_holm_matches_the_statsmodels_definition():
    rng = np.random.default_rng(7)
    for m in (2, 3, 5, 12):
        p_values = [float(p) for p in rng.uniform(0, 0.3, size=m)]
        p_values[-1] = p_values[0]  # a tie
        adjusted = holm(p_values)
        assert adjusted == pytest.approx(_holm_statsmodels_loop(p_values), abs=1e-15)
        # monotone in p and never below p
        for p, a in zip(p_values, adjusted, strict=True):
            assert a is not None and p <= a <= 1
            assert all(a <= b for q, b in zip(p_values, adjusted, strict=True) if q >= p and b is not None)


# ------------------------------------------------------------------ wilcoxon


def test_wilcoxon_five_positive_differences_is_two_over_32():
    # exact null: W+ = 15 (all signs positive) has probability 1/32, two-sided p = 2/32
    assert wilcoxon_p([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(2 / 32)
    comparison = compare_images(
        _scores([0.61, 0.72, 0.53, 0.84, 0.75]), _scores([0.60, 0.70, 0.50, 0.80, 0.70]), resamples=RESAMPLES
    )
    assert comparison.n_images == 5
    assert comparison.mean_difference == pytest.approx(0.03)  # (0.01 + 0.02 + 0.03 + 0.04 + 0.05) / 5
    assert comparison.p_value == pytest.approx(0.0625)


def test_wilcoxon_hand_case_with_one_negative_difference():
    # ranks of |d| = 1..5, negative rank 3 -> W- = 3; subsets of {1..5} summing to <= 3: {}, {1}, {2}, {3},
    # {1, 2} -> P(W- <= 3) = 5/32, two-sided p = 10/32
    assert wilcoxon_p([1.0, 2.0, -3.0, 4.0, 5.0]) == pytest.approx(10 / 32)


def test_wilcoxon_p_is_scipys_on_the_same_differences():
    rng = np.random.default_rng(3)
    reference = [float(v) for v in rng.uniform(0.4, 0.9, size=30)]
    arm = [r + float(e) for r, e in zip(reference, rng.normal(0.02, 0.05, size=30), strict=True)]
    comparison = compare_images(_scores(arm), _scores(reference), resamples=RESAMPLES)
    differences = [a - r for a, r in zip(arm, reference, strict=True)]
    assert comparison.p_value == pytest.approx(float(stats.wilcoxon(differences).pvalue), rel=1e-12)
    # with zero differences and ties (n <= 13: scipy enumerates the sign flips)
    tied = [0.0, 0.1, 0.1, -0.2, 0.3, 0.0, 0.4]
    expected = float(stats.wilcoxon(tied, zero_method="wilcox").pvalue)
    assert wilcoxon_p(tied) == pytest.approx(expected, rel=1e-12)


def test_wilcoxon_is_none_without_a_test():
    assert wilcoxon_p([]) is None
    assert wilcoxon_p([0.3]) is None
    assert wilcoxon_p([0.0, 0.0, 0.0]) is None  # every difference zero


# ------------------------------------------------------------------ bootstrap


def _naive_percentile_bootstrap(differences: list[float], resamples: int, seed: int, confidence: float):
    """The documented definition as loops: the same seeded draw of indices, means summed one by one, and the
    type-7 quantile (sorted means interpolated at q * (resamples - 1)) worked out by hand."""
    n = len(differences)
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = []
    for row in index.tolist():
        total = 0.0
        for i in row:
            total += differences[i]
        means.append(total / n)
    means.sort()

    def quantile(q: float) -> float:
        position = q * (resamples - 1)
        below = math.floor(position)
        above = min(below + 1, resamples - 1)
        return means[below] + (position - below) * (means[above] - means[below])

    return quantile((1 - confidence) / 2), quantile((1 + confidence) / 2)


def test_bootstrap_interval_matches_a_naive_loop():
    rng = np.random.default_rng(11)
    differences = [float(v) for v in rng.normal(0.01, 0.03, size=17)]
    for seed, confidence in ((0, 0.95), (5, 0.9)):
        low, high = _naive_percentile_bootstrap(differences, RESAMPLES, seed, confidence)
        interval = bootstrap_interval(differences, resamples=RESAMPLES, seed=seed, confidence=confidence)
        assert interval == pytest.approx((low, high), abs=1e-12)
    mean = sum(differences) / len(differences)
    low, high = bootstrap_interval(differences, resamples=RESAMPLES, seed=0) or (math.nan, math.nan)
    assert low < mean < high


def test_bootstrap_hand_cases():
    # constant differences: every resample has the same mean
    assert bootstrap_interval([0.02, 0.02, 0.02], resamples=RESAMPLES) == pytest.approx((0.02, 0.02))
    # d = [0, 1]: resample means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so (with ~500 of each extreme
    # among 2000 resamples) the 2.5% and 97.5% quantiles are 0 and 1
    assert bootstrap_interval([0.0, 1.0], resamples=RESAMPLES) == (0.0, 1.0)
    assert bootstrap_interval([0.3], resamples=RESAMPLES) is None
    assert bootstrap_interval([], resamples=RESAMPLES) is None


def test_bootstrap_is_reproducible_with_the_seed_and_shrinks_with_more_images():
    rng = np.random.default_rng(1)
    differences = [float(v) for v in rng.normal(0.0, 0.05, size=200)]
    first = bootstrap_interval(differences[:20], resamples=RESAMPLES, seed=4)
    assert first == bootstrap_interval(differences[:20], resamples=RESAMPLES, seed=4)
    assert first != bootstrap_interval(differences[:20], resamples=RESAMPLES, seed=5)
    wide = bootstrap_interval(differences[:20], resamples=RESAMPLES)
    narrow = bootstrap_interval(differences, resamples=RESAMPLES)
    assert wide is not None and narrow is not None
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval([0.1, 0.2], resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([0.1, 0.2], confidence=1.0)


# ------------------------------------------------------------------ compare_images


def test_compare_images_pairs_only_the_images_in_both_arms():
    arm = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "only_arm": 0.1}
    reference = {"a": 0.8, "b": 0.6, "c": float("nan"), "d": 0.3, "only_reference": 0.9}
    comparison = compare_images(arm, reference, resamples=RESAMPLES)
    # a, b, d: differences 0.1, 0.2, 0.3 (c is NaN in the reference)
    assert comparison.n_images == 3
    assert comparison.mean_difference == pytest.approx(0.2)
    # 3 positive distinct differences: exact two-sided p = 2/8
    assert comparison.p_value == pytest.approx(0.25)
    expected = bootstrap_interval([0.9 - 0.8, 0.8 - 0.6, 0.6 - 0.3], resamples=RESAMPLES)  # sorted stem order
    assert expected is not None
    assert (comparison.ci_low, comparison.ci_high) == pytest.approx(expected)
    assert comparison.p_holm is None


def test_compare_images_with_fewer_than_two_images():
    one = compare_images({"a": 0.9, "b": None}, {"a": 0.7, "b": 0.5}, resamples=RESAMPLES)
    assert one.n_images == 1
    assert one.mean_difference == pytest.approx(0.2)  # one image keeps its difference ...
    assert (one.ci_low, one.ci_high, one.p_value, one.p_holm) == (None, None, None, None)  # ... but no interval/p
    none = compare_images({"a": 0.9}, {"b": 0.7}, resamples=RESAMPLES)
    assert none == ImageComparison(0, None, None, None, None, None)


def test_compare_images_with_all_differences_zero():
    same = _scores([0.5, 0.6, 0.7])
    comparison = compare_images(same, dict(same), resamples=RESAMPLES)
    assert comparison == ImageComparison(3, 0.0, 0.0, 0.0, None, None)


def test_compare_images_does_not_depend_on_the_mapping_order():
    arm = _scores([0.5, 0.9, 0.4, 0.8, 0.7, 0.65])
    reference = _scores([0.45, 0.8, 0.42, 0.7, 0.6, 0.6])
    shuffled = dict(reversed(list(arm.items())))
    assert compare_images(shuffled, reference, resamples=RESAMPLES) == compare_images(
        arm, reference, resamples=RESAMPLES
    )


# ------------------------------------------------------------------ compare_arms


def test_compare_arms_adjusts_over_the_arms_against_the_reference():
    reference = _scores([0.50, 0.60, 0.70, 0.80, 0.90])
    per_arm = {
        "better": _scores([0.51, 0.62, 0.73, 0.84, 0.95]),  # all positive: p = 0.0625
        "none": reference,
        "mixed": _scores([0.51, 0.62, 0.67, 0.84, 0.95]),  # -0.03 has rank 3: p = 10/32
        "short": _scores([0.55]),  # one image: no p, not counted by Holm
    }
    comparisons = compare_arms(per_arm, "none", resamples=RESAMPLES, seed=2)
    assert list(comparisons) == ["better", "mixed", "short"]
    assert comparisons["better"].p_value == pytest.approx(0.0625)
    assert comparisons["mixed"].p_value == pytest.approx(0.3125)
    # Holm over m = 2: 2 * 0.0625 = 0.125, max(0.125, 0.3125) = 0.3125
    assert comparisons["better"].p_holm == pytest.approx(0.125)
    assert comparisons["mixed"].p_holm == pytest.approx(0.3125)
    assert comparisons["short"].p_holm is None and comparisons["short"].n_images == 1
    direct = compare_images(per_arm["better"], reference, resamples=RESAMPLES, seed=2)
    assert (comparisons["better"].ci_low, comparisons["better"].ci_high) == (direct.ci_low, direct.ci_high)
    with pytest.raises(KeyError, match="missing"):
        compare_arms(per_arm, "missing")


# ------------------------------------------------------------------ seed_mean_per_image


def test_seed_mean_per_image_leaves_out_missing_values():
    per_seed = {
        0: {"b": 0.6, "a": 0.2, "c": None, "d": float("nan")},
        1: {"b": 0.8, "a": float("nan"), "c": None},
        2: {"b": 0.7, "a": 0.4, "e": 0.5},
    }
    means = seed_mean_per_image(per_seed)
    assert list(means) == ["a", "b", "e"]  # sorted; c and d have no finite value
    assert means == pytest.approx({"a": 0.3, "b": 0.7, "e": 0.5})  # a: (0.2 + 0.4) / 2 over its 2 finite seeds
    assert seed_mean_per_image({}) == {}


# ------------------------------------------------------------------ format_comparison


def test_format_comparison_strings():
    significant = ImageComparison(20, 0.0123, 0.0041, 0.0199, 0.0156, 0.0312)
    assert format_comparison(significant) == "**+0.012 [+0.004, +0.020], p=0.016 (Holm 0.031)**"
    plain = ImageComparison(20, -0.0123, -0.0301, 0.0049, 0.0156, 0.0625)
    assert format_comparison(plain) == "-0.012 [-0.030, +0.005], p=0.016 (Holm 0.062)"
    assert format_comparison(plain, digits=2) == "-0.01 [-0.03, +0.00], p=0.02 (Holm 0.06)"
    unadjusted = ImageComparison(20, 0.0123, 0.0041, 0.0199, 0.0156, None)  # compare_images alone: not bold
    assert format_comparison(unadjusted) == "+0.012 [+0.004, +0.020], p=0.016"
    tiny = ImageComparison(200, 0.05, 0.04, 0.06, 1e-9, 3e-9)
    assert format_comparison(tiny) == "**+0.050 [+0.040, +0.060], p<0.001 (Holm <0.001)**"
    near_zero = ImageComparison(3, -0.0001, -0.0004, 0.0002, None, None)  # rounds to +0.000, not -0.000
    assert format_comparison(near_zero) == "+0.000 [+0.000, +0.000]"
    assert format_comparison(ImageComparison(1, 0.2, None, None, None, None)) == "+0.200"
    assert format_comparison(ImageComparison(0, None, None, None, None, None)) == "\u2013"
