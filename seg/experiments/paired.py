"""Paired statistics over test images for a comparison of training strategies ("arms").

Every arm is trained with a few seeds and every run is scored on the same test images. With n = 3 seeds a
test over seeds has almost no power (a two-sided Wilcoxon over 3 seeds can never go below p = 0.25), so an
arm is compared with a reference arm over the images instead:

- per image, the score of an arm is the mean over its seeds (:func:`seed_mean_per_image`);
- per image present (with a finite score) in both arms, the difference ``d_i = arm_i - reference_i``;
- the mean of the ``d_i`` with a paired bootstrap percentile interval (:func:`bootstrap_interval`): the images
  are resampled with replacement, so each resample keeps an image's two scores together;
- a two-sided Wilcoxon signed-rank test of the ``d_i`` (:func:`wilcoxon_p`);
- Holm-Bonferroni adjusted p-values over the arms compared with the same reference (:func:`holm`).

All functions are pure; the bootstrap draws from a ``numpy.random.Generator`` seeded with ``seed``, so a
result is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000
SIGNIFICANCE = 0.05  # format_comparison bolds a comparison whose Holm-adjusted p is below this
NO_VALUE = "\N{EN DASH}"


@dataclass(frozen=True)
class ImageComparison:
    """One arm against a reference over the test images.

    ``n_images``: images with a finite score in both arms; ``mean_difference``: mean over those images of
    ``arm - reference`` (None without images); ``ci_low`` / ``ci_high``: paired bootstrap percentile interval
    of that mean; ``p_value``: two-sided Wilcoxon signed-rank p over the images; ``p_holm``: ``p_value``
    Holm-adjusted over the arms compared with the same reference (filled by :func:`compare_arms`).
    Interval and p are None with fewer than 2 images; p is also None when every difference is zero.
    """

    n_images: int
    mean_difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_holm: float | None = None


def _finite(value: object) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, a bool or not finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def seed_mean_per_image(per_seed: Mapping[int, Mapping[str, float | None]]) -> dict[str, float]:
    """``{seed: {image stem: score}}`` -> ``{stem: mean over the seeds where the score is finite}``.

    A missing, None or NaN score is left out of its image's mean (so an image's mean may be over fewer seeds
    than the others'); an image with no finite score in any seed is left out. Stems are sorted.
    """
    kept: dict[str, list[float]] = {}
    for scores in per_seed.values():
        for stem, value in scores.items():
            number = _finite(value)
            if number is not None:
                kept.setdefault(stem, []).append(number)
    return {stem: math.fsum(values) / len(values) for stem, values in sorted(kept.items())}


def paired_differences(arm: Mapping[str, float | None], reference: Mapping[str, float | None]) -> list[float]:
    """``arm[stem] - reference[stem]`` for the stems with a finite score in both, in sorted stem order."""
    differences = []
    for stem in sorted(set(arm) & set(reference)):
        a, b = _finite(arm[stem]), _finite(reference[stem])
        if a is not None and b is not None:
            differences.append(a - b)
    return differences


def bootstrap_interval(
    differences: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``differences`` (None with fewer than 2 values).

    Definition: ``rng = numpy.random.default_rng(seed)``; one draw
    ``index = rng.integers(0, n, size=(resamples, n))`` (row b holds the n images of resample b, drawn with
    replacement); ``means[b] = mean(differences[index[b]])``; the interval is
    ``numpy.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])`` with numpy's default ("linear",
    Hyndman-Fan type 7) quantile: the sorted means interpolated at position ``q * (resamples - 1)``.
    Resampling the differences is the paired bootstrap: an image's two scores stay together.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = np.asarray(differences, dtype=float)
    n = values.size
    if n < 2:
        return None
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = values[index].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p of ``differences`` (None with fewer than 2 values or no nonzero one).

    ``scipy.stats.wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided",
    method="auto")``: zero differences are dropped before ranking; ties in ``|d|`` get average ranks. scipy's
    "auto" (1.13+) uses the exact null distribution when n <= 50 and there are no ties or zeros, an exact
    enumeration of the 2^n sign flips (permutation test) when n <= 13 with ties or zeros, and otherwise the
    normal approximation with tie correction and no continuity correction. Example: 5 differences, all
    positive and distinct: p = 2 / 2^5 = 0.0625.
    """
    values = np.asarray(differences, dtype=float)
    if values.size < 2 or not np.any(values != 0):
        return None
    result = stats.wilcoxon(values, zero_method="wilcox", correction=False, alternative="two-sided", method="auto")
    p = float(result.pvalue)
    return p if math.isfinite(p) else None


def compare_images(
    arm: Mapping[str, float | None],
    reference: Mapping[str, float | None],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> ImageComparison:
    """``arm`` against ``reference`` (each ``{image stem: score}``, e.g. the seed means) over their images.

    Paired over the images with a finite score in both (the others are left out; ``n_images`` counts the
    kept ones): ``d_i = arm_i - reference_i`` in sorted stem order; the mean of the ``d_i`` (None without
    images), its :func:`bootstrap_interval` and the :func:`wilcoxon_p` of the ``d_i``. With fewer than 2
    images the interval and p are None (with one image the mean is still its difference); when every
    difference is zero p is None and the interval is [0, 0]. ``p_holm`` is left None (see
    :func:`compare_arms`).
    """
    differences = paired_differences(arm, reference)
    n = len(differences)
    mean = math.fsum(differences) / n if n else None
    interval = bootstrap_interval(differences, resamples=resamples, seed=seed, confidence=confidence)
    return ImageComparison(
        n_images=n,
        mean_difference=mean,
        ci_low=None if interval is None else interval[0],
        ci_high=None if interval is None else interval[1],
        p_value=wilcoxon_p(differences),
    )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the m non-None p sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value of ``p_(i)`` is
    ``min(1, max_{j <= i} (m - j + 1) * p_(j))``: monotone in p and capped at 1 (the definition of
    statsmodels' ``multipletests(method="holm")``). None entries stay None and do not count in m.
    """
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def compare_arms(
    per_arm: Mapping[str, Mapping[str, float | None]],
    reference: str,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, ImageComparison]:
    """Every arm except ``reference`` against it, in ``per_arm`` order (``per_arm[arm] = {stem: score}``).

    Each comparison is :func:`compare_images` with the same ``seed`` (so arms scored on the same images are
    resampled with the same images), and ``p_holm`` is :func:`holm` over the p-values of these arms (an arm
    without a p is not counted). Raises KeyError when ``reference`` is not in ``per_arm``.
    """
    if reference not in per_arm:
        raise KeyError(f"reference arm {reference!r} not in {sorted(per_arm)}")
    base = per_arm[reference]
    comparisons = {
        name: compare_images(scores, base, resamples=resamples, seed=seed, confidence=confidence)
        for name, scores in per_arm.items()
        if name != reference
    }
    adjusted = holm([c.p_value for c in comparisons.values()])
    return {name: replace(c, p_holm=p) for (name, c), p in zip(comparisons.items(), adjusted, strict=True)}


def _signed(value: float, digits: int) -> str:
    """``value`` with an explicit sign and ``digits`` decimals; a value that rounds to zero is ``+0.0...``."""
    return f"{round(value, digits) + 0.0:+.{digits}f}"


def _p(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, or ``<0.001`` (for 3 digits) when it would round below that."""
    smallest = 10.0**-digits
    return f"<{smallest:.{digits}f}" if value < smallest else f"{value:.{digits}f}"


def format_comparison(c: ImageComparison, digits: int = 3) -> str:
    """One comparison as text, e.g. ``+0.012 [+0.004, +0.020], p=0.016 (Holm 0.031)``.

    The parts without a value are left out (the interval, ``p=`` and ``(Holm ...)``); the whole text is an
    en dash when there is no mean difference, and it is bold (``**...**``) when the Holm-adjusted p < 0.05.
    """
    if c.mean_difference is None:
        return NO_VALUE
    text = _signed(c.mean_difference, digits)
    if c.ci_low is not None and c.ci_high is not None:
        text += f" [{_signed(c.ci_low, digits)}, {_signed(c.ci_high, digits)}]"
    if c.p_value is not None:
        p = _p(c.p_value, digits)
        text += f", p{p}" if p.startswith("<") else f", p={p}"
        if c.p_holm is not None:
            text += f" (Holm {_p(c.p_holm, digits)})"
    if c.p_holm is not None and c.p_holm < SIGNIFICANCE:
        text = f"**{text}**"
    return text
