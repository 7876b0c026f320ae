"""Aggregate a strategy x seed grid: pure functions from run summaries to tables.

Input: ``runs[strategy][seed] = summary`` (each run's summary.json, as a :class:`seg.results.RunSummary`).
Every number is a mean over seeds with a 95% Student t interval,
``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (sd with n - 1 degrees of freedom), and,
against a reference strategy (``none``), the mean of the per-seed paired differences
with the same interval on those differences. A value a run does not have (a threshold
policy or channel it was not scored on, or a score that is null under the empty policy
``nan``) is left out, and ``n`` says how many seeds remain.

Rows are long-format dicts (one per strategy x quantity x variant x channel); the
Markdown (:mod:`seg.experiments.markdown`), the CSV (:mod:`seg.experiments.report`) and the
plots (:mod:`seg.experiments.plots`) are views of these rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats

from seg.results import RunSummary, ScoreBlock
from seg.scoring.policies import POLICIES

SCORES = ("dice", "iou")
CALIBRATION = ("raw", "prior_corrected")  # val.ece variants
MACRO = "macro"
CONFIDENCE = 0.95

CSV_COLUMNS = (
    "strategy",
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


def score(summary: RunSummary, policy: str, metric: str, channel: str) -> float | None:
    """Dice/IoU of one run under a threshold policy, macro or for one channel (None if absent)."""
    val = summary.val
    block: ScoreBlock | None = val.by_threshold.get(policy)
    if block is None and val.threshold == policy:
        block = val
    if block is None:
        return None
    if channel == MACRO:
        return _finite(getattr(block, metric))
    pair = block.per_channel.get(channel)
    return None if pair is None else _finite(getattr(pair, metric))


def calibration_error(summary: RunSummary, variant: str, channel: str) -> float | None:
    """ECE (val.ece) of one run: the mean over channels (``macro``) or one channel's."""
    ece = summary.val.ece
    if channel == MACRO:
        return _finite(getattr(ece, f"{variant}_mean"))
    return _finite(getattr(ece, variant).get(channel))


def applied_weight(summary: RunSummary, index: int) -> float | None:
    """The effective pos_weight of channel ``index`` in the run's last epoch."""
    weights = summary.effective_pos_weight
    return _finite(weights[index]) if index < len(weights) else None


# ------------------------------------------------------------------ the grid


def _row(
    strategy: str, quantity: str, variant: str, channel: str, interval: Interval, difference: Interval | None
) -> dict:
    return {
        "strategy": strategy,
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
    }


def aggregate(
    runs: Mapping[str, Mapping[int, RunSummary]], channels: list[str], reference: str | None = "none"
) -> list[dict]:
    """Long-format rows for every strategy (in ``runs`` order).

    quantity / variant / channel:
    - ``dice``, ``iou`` / threshold policy (0.5, prior_corrected, tuned) / ``macro`` or a channel;
    - ``ece`` / raw or prior_corrected / ``macro`` (mean over channels) or a channel;
    - ``effective_pos_weight`` / "" / a channel (the weight applied in the last epoch);
    - ``wall_time_per_epoch_s`` / "" / "".
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
    return rows


def find(rows: list[dict], strategy: str, quantity: str, variant: str = "", channel: str = "") -> dict | None:
    """The row for one strategy/quantity/variant/channel, or None."""
    for row in rows:
        if (row["strategy"], row["quantity"], row["variant"], row["channel"]) == (strategy, quantity, variant, channel):
            return row
    return None


def format_csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
