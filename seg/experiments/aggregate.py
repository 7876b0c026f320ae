"""Aggregate a strategy x seed grid: pure functions from run summaries to tables.

Input: ``runs[strategy][seed] = summary`` (each run's summary.json, as a :class:`seg.results.RunSummary`).
Every number is a mean over seeds with a 95% Student t interval,
``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (sd with n - 1 degrees of freedom), and,
against a reference strategy (``none``), the mean of the per-seed paired differences
with the same interval on those differences. A value a run does not have (a threshold
policy or channel it was not scored on, or a score that is null under the empty policy
``nan``) is left out, and ``n`` says how many seeds remain.

Rows are long-format dicts (one per strategy x split x quantity x variant x channel); the
Markdown (:mod:`seg.experiments.markdown`), the CSV (:mod:`seg.experiments.report`) and the
plots (:mod:`seg.experiments.plots`) are views of these rows.

``split`` ``val``: from the summaries (the last epoch's validation). ``split`` ``test``: from each
run's final model evaluated on the held-out test split with the thresholds and Platt parameters
chosen on validation (``runs/<run>.eval-test.json``). Test rows of per-image quantities (macro
Dice/IoU and the structure scores) also carry statistics over images
(:mod:`seg.experiments.paired`): per image the mean over seeds, then the paired bootstrap interval
of the mean difference from the reference and the Wilcoxon signed-rank p-value, Holm-adjusted over
the strategies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats

from seg.experiments.paired import ImageComparison, compare_arms, seed_mean_per_image
from seg.results import Calibration, EvalResult, RunSummary, ScoreBlock, Scores
from seg.scoring.policies import POLICIES

SCORES = ("dice", "iou")
CALIBRATION = ("raw", "prior_corrected")  # val.ece variants
TEST_CALIBRATION = ("raw", "prior_corrected", "platt")  # with Platt scaling fitted on validation
STRUCTURE = (
    "v_rand",
    "v_info",
    "v_rand_split",
    "v_rand_merge",
    "v_info_split",
    "v_info_merge",
    "ap",
    "ap50",
    "f1_50",
    "merges",
    "splits",
)
MACRO = "macro"
CONFIDENCE = 0.95
CURVE_SHARE = 0.2  # the budget check: how much the validation curve moves over this share of the last epochs

CSV_COLUMNS = (
    "strategy",
    "split",
    "quantity",
    "variant",
    "channel",
    "n",
    "mean",
    "sd",
    "ci_low",
    "ci_high",
    "diff_n",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "images",
    "image_diff_mean",
    "image_diff_ci_low",
    "image_diff_ci_high",
    "image_p",
    "image_p_holm",
)


@dataclass(frozen=True)
class Interval:
    """Mean of n values with the half-width of its t interval (None when n < 2)."""

    n: int
    mean: float | None
    sd: float | None
    half_width: float | None

    @property
    def low(self) -> float | None:
        return None if self.half_width is None or self.mean is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None or self.mean is None else self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool:
        low, high = self.low, self.high
        return low is not None and high is not None and (low > 0 or high < 0)


def _finite(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def t_interval(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Interval:
    """Student t interval of the mean; missing (None/NaN) values are left out."""
    kept = [v for v in (_finite(x) for x in values) if v is not None]
    n = len(kept)
    if n == 0:
        return Interval(0, None, None, None)
    mean = sum(kept) / n
    if n == 1:
        return Interval(1, mean, None, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, half)


def paired_difference(
    values: Mapping[int, float | None], reference: Mapping[int, float | None], confidence: float = CONFIDENCE
) -> Interval:
    """t interval of ``values[seed] - reference[seed]`` over the seeds where both exist."""
    differences = []
    for seed in sorted(set(values) & set(reference)):
        a, b = _finite(values[seed]), _finite(reference[seed])
        if a is not None and b is not None:
            differences.append(a - b)
    return t_interval(differences, confidence)


# ------------------------------------------------------------------ reading one summary


def score(summary: RunSummary | Scores, policy: str, metric: str, channel: str) -> float | None:
    """Dice/IoU of one run (its summary's val block, or a Scores block) under a threshold policy, macro or
    for one channel (None if absent)."""
    val = summary.val if isinstance(summary, RunSummary) else summary
    block: ScoreBlock | None = val.by_threshold.get(policy)
    if block is None and val.threshold == policy:
        block = val
    if block is None:
        return None
    if channel == MACRO:
        return _finite(getattr(block, metric))
    pair = block.per_channel.get(channel)
    return None if pair is None else _finite(getattr(pair, metric))


def calibration_error(summary: RunSummary | Scores, variant: str, channel: str) -> float | None:
    """ECE (val.ece) of one run: the mean over channels (``macro``) or one channel's."""
    ece = (summary.val if isinstance(summary, RunSummary) else summary).ece
    if channel == MACRO:
        return _finite(getattr(ece, f"{variant}_mean"))
    return _finite((getattr(ece, variant) or {}).get(channel))


def brier(ece: Calibration, variant: str, channel: str) -> float | None:
    """The Brier score of a calibration variant: the mean over channels (``macro``) or one channel's."""
    if channel == MACRO:
        return _finite((ece.brier_mean or {}).get(variant))
    return _finite((ece.brier or {}).get(variant, {}).get(channel))


def structure_score(scores: Scores, policy: str, key: str, channel: str) -> float | None:
    """A structure metric (mean over images) under a threshold policy: ``macro`` (mean over channels) or a channel's."""
    if scores.structure is None:
        return None
    block = scores.structure.by_threshold.get(policy) or {}
    values = block.get("mean") if channel == MACRO else (block.get("per_channel") or {}).get(channel)
    return _finite((values or {}).get(key))


def curve_change(summary: RunSummary, policy: str, share: float = CURVE_SHARE) -> float | None:
    """max - min of the macro validation Dice at ``policy`` over the last ``share`` of the epochs (k =
    ceil(share * epochs), at least 1, epochs and the one before them); None when not recorded."""
    curve = (summary.val_dice_curve or {}).get(policy) or []
    k = max(1, math.ceil(share * len(curve)))
    tail = [v for v in (_finite(x) for x in curve[-(k + 1) :]) if v is not None]
    return max(tail) - min(tail) if len(tail) >= 2 else None


def applied_weight(summary: RunSummary, index: int) -> float | None:
    """The effective pos_weight of channel ``index`` in the run's last epoch."""
    weights = summary.effective_pos_weight
    return _finite(weights[index]) if index < len(weights) else None


# ------------------------------------------------------------------ the grid


def _row(
    strategy: str,
    quantity: str,
    variant: str,
    channel: str,
    interval: Interval,
    difference: Interval | None,
    split: str = "val",
    images: ImageComparison | None = None,
) -> dict:
    return {
        "strategy": strategy,
        "split": split,
        "quantity": quantity,
        "variant": variant,
        "channel": channel,
        "n": interval.n,
        "mean": interval.mean,
        "sd": interval.sd,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "diff_n": difference.n if difference else None,
        "diff_mean": difference.mean if difference else None,
        "diff_ci_low": difference.low if difference else None,
        "diff_ci_high": difference.high if difference else None,
        "images": images.n_images if images else None,
        "image_diff_mean": images.mean_difference if images else None,
        "image_diff_ci_low": images.ci_low if images else None,
        "image_diff_ci_high": images.ci_high if images else None,
        "image_p": images.p_value if images else None,
        "image_p_holm": images.p_holm if images else None,
    }


def aggregate(
    runs: Mapping[str, Mapping[int, RunSummary]],
    channels: list[str],
    reference: str | None = "none",
    evaluations: Mapping[str, Mapping[int, EvalResult]] | None = None,
) -> list[dict]:
    """Long-format rows for every strategy (in ``runs`` order).

    quantity / variant / channel:
    - ``dice``, ``iou`` / threshold policy (0.5, prior_corrected, tuned) / ``macro`` or a channel;
    - ``ece`` / raw or prior_corrected / ``macro`` (mean over channels) or a channel;
    - ``effective_pos_weight`` / "" / a channel (the weight applied in the last epoch);
    - ``wall_time_per_epoch_s`` / "" / "";
    - ``curve_change`` / threshold policy / ``macro``: how much the validation curve moved at the end
      (:func:`curve_change`; summaries that recorded the curve only).
    Scores and ECE carry the paired difference against ``reference`` (if it is in ``runs``).
    """
    base = runs.get(reference) if reference else None
    rows: list[dict] = []

    def add(strategy: str, quantity: str, variant: str, channel: str, read, paired: bool) -> None:
        per_seed = {seed: read(summary) for seed, summary in runs[strategy].items()}
        if all(v is None for v in per_seed.values()):
            return
        difference = None
        if paired and base is not None and strategy != reference:
            difference = paired_difference(per_seed, {seed: read(s) for seed, s in base.items()})
        rows.append(_row(strategy, quantity, variant, channel, t_interval(per_seed.values()), difference))

    for strategy in runs:
        for metric in SCORES:
            for policy in POLICIES:
                for channel in [MACRO, *channels]:
                    add(
                        strategy,
                        metric,
                        policy,
                        channel,
                        lambda s, p=policy, m=metric, c=channel: score(s, p, m, c),
                        True,
                    )
        for variant in CALIBRATION:
            for channel in [MACRO, *channels]:
                add(strategy, "ece", variant, channel, lambda s, v=variant, c=channel: calibration_error(s, v, c), True)
        for index, channel in enumerate(channels):
            add(
                strategy,
                "effective_pos_weight",
                "",
                channel,
                lambda s, i=index: applied_weight(s, i),
                False,
            )
        add(strategy, "wall_time_per_epoch_s", "", "", lambda s: _finite(s.wall_time_per_epoch_s), False)
        for policy in POLICIES:
            add(strategy, "curve_change", policy, MACRO, lambda s, p=policy: curve_change(s, p), False)
        for policy in POLICIES:
            for key in STRUCTURE:
                for channel in [MACRO, *channels] if len(channels) > 1 else [MACRO]:
                    read = lambda s, p=policy, k=key, c=channel: structure_score(s.val, p, k, c)  # noqa: E731
                    add(strategy, key, policy, channel, read, True)
    if evaluations:
        rows += held_out_rows(evaluations, channels, reference)
    return rows


def _image_scores(
    evaluations: Mapping[str, Mapping[int, EvalResult]], policy: str, key: str
) -> dict[str, dict[str, float]]:
    """{strategy: {stem: mean over seeds}} of a per-image score (macro over the image's channels)."""
    out = {}
    for strategy, by_seed in evaluations.items():
        per_seed = {
            seed: {stem: scores.get(key) for stem, scores in ((e.per_image or {}).get(policy) or {}).items()}
            for seed, e in by_seed.items()
        }
        out[strategy] = seed_mean_per_image(per_seed)
    return out


def held_out_rows(
    evaluations: Mapping[str, Mapping[int, EvalResult]], channels: list[str], reference: str | None
) -> list[dict]:
    """Rows of split ``test``: every run's final model on the held-out test split (choices made on val)."""
    base = evaluations.get(reference) if reference else None
    rows: list[dict] = []
    image_stats: dict[tuple[str, str], dict[str, ImageComparison]] = {}

    def images(quantity: str, policy: str) -> dict[str, ImageComparison]:
        if (quantity, policy) not in image_stats:
            per_arm = _image_scores(evaluations, policy, quantity)
            usable = reference in per_arm and any(per_arm.values())
            image_stats[quantity, policy] = compare_arms(per_arm, reference) if usable else {}  # type: ignore[arg-type]
        return image_stats[quantity, policy]

    def add(strategy: str, quantity: str, variant: str, channel: str, read, paired: bool, per_image: bool) -> None:
        per_seed = {seed: read(e.metrics) for seed, e in evaluations[strategy].items()}
        if all(v is None for v in per_seed.values()):
            return
        difference = None
        if paired and base is not None and strategy != reference:
            difference = paired_difference(per_seed, {seed: read(e.metrics) for seed, e in base.items()})
        comparison = images(quantity, variant).get(strategy) if per_image and channel == MACRO else None
        rows.append(
            _row(strategy, quantity, variant, channel, t_interval(per_seed.values()), difference, "test", comparison)
        )

    every = [MACRO, *channels]
    for strategy in evaluations:
        for metric in SCORES:
            for policy in POLICIES:
                for channel in every:
                    read = lambda m, p=policy, k=metric, c=channel: score(m, p, k, c)  # noqa: E731
                    add(strategy, metric, policy, channel, read, True, True)
        for variant in TEST_CALIBRATION:
            for channel in every:
                add(
                    strategy,
                    "ece",
                    variant,
                    channel,
                    lambda m, v=variant, c=channel: calibration_error(m, v, c),
                    True,
                    False,
                )
                add(
                    strategy, "brier", variant, channel, lambda m, v=variant, c=channel: brier(m.ece, v, c), True, False
                )
        for policy in POLICIES:
            for key in STRUCTURE:
                for channel in every if len(channels) > 1 else [MACRO]:
                    read = lambda m, p=policy, k=key, c=channel: structure_score(m, p, k, c)  # noqa: E731
                    add(strategy, key, policy, channel, read, True, True)
    return rows


def find(
    rows: list[dict], strategy: str, quantity: str, variant: str = "", channel: str = "", split: str = "val"
) -> dict | None:
    """The row for one strategy/quantity/variant/channel of a split (val: the summaries; test), or None."""
    key = (strategy, split, quantity, variant, channel)
    for row in rows:
        if (row["strategy"], row.get("split", "val"), row["quantity"], row["variant"], row["channel"]) == key:
            return row
    return None


def format_csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
