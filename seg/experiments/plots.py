"""The comparison's two plots, from the aggregated rows: Dice per channel with intervals, and Dice
(and its paired difference from the reference) against the channel's frequency in the training split.
"""

from __future__ import annotations

from pathlib import Path

from seg.experiments.aggregate import MACRO, find
from seg.outputs.tables import percent
from seg.scoring.policies import POLICIES, POLICY_LABELS

PLOTS = {"dice_per_channel": "dice_per_channel.png", "dice_vs_frequency": "dice_vs_frequency.png"}  # file names


def write_comparison_plots(
    rows: list[dict],
    strategies: list[str],
    channels: list[str],
    fractions: dict,
    folder: Path,
    title: str,
    reference: str | None,
) -> None:
    """Both plots into ``folder`` (matplotlib, Agg, no pyplot); with one channel only the first
    (Dice against frequency would be a single point)."""
    plot_dice_per_channel(rows, strategies, channels, fractions, folder / PLOTS["dice_per_channel"], title)
    if len(channels) > 1:
        plot_dice_vs_frequency(
            rows, strategies, channels, fractions, folder / PLOTS["dice_vs_frequency"], title, reference
        )


def _error(row: dict | None) -> tuple[float, float]:
    if row is None or row["mean"] is None:
        return float("nan"), 0.0
    return row["mean"], 0.0 if row["ci_high"] is None else row["ci_high"] - row["mean"]


def _bars(ax, rows: list[dict], strategies: list[str], keys: list[tuple[str, str]], colours: list) -> None:
    """One bar per strategy for each (policy, channel) in ``keys``, with its interval."""
    width = 0.8 / len(strategies)
    for k, strategy in enumerate(strategies):
        values = [_error(find(rows, strategy, "dice", policy, channel)) for policy, channel in keys]
        ax.bar(
            [i + (k - (len(strategies) - 1) / 2) * width for i in range(len(keys))],
            [v[0] for v in values],
            width,
            yerr=[v[1] for v in values],
            capsize=2,
            color=colours[k],
            label=strategy,
            error_kw={"elinewidth": 0.8},
        )
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.grid(axis="y", alpha=0.3)


def plot_dice_per_channel(
    rows: list[dict], strategies: list[str], channels: list[str], fractions: dict, path: Path, title: str
) -> None:
    """Grouped bars of Dice per strategy: per channel (and macro), one panel per threshold policy;
    with a single channel, one panel with a group per threshold policy."""
    from matplotlib.figure import Figure

    colours = _colours(len(strategies))
    caption = "mean and 95% t interval over seeds"
    if len(channels) == 1:
        fig = Figure(figsize=(max(6.0, 0.45 * len(POLICIES) * len(strategies) + 2.0), 4.2), layout="constrained")
        ax = fig.subplots()
        _bars(ax, rows, strategies, [(policy, channels[0]) for policy in POLICIES], colours)
        ax.set_xticks(range(len(POLICIES)), [f"threshold\n{POLICY_LABELS[p]}" for p in POLICIES], fontsize=9)
        ax.legend(ncol=min(len(strategies), 5), fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0))
        fig.suptitle(
            f"{title}\nDice of {channels[0]} ({percent(fractions.get(channels[0]))} of training pixels), {caption}",
            fontsize=10,
        )
        fig.savefig(path, dpi=100)
        return
    groups = [*channels, MACRO]
    labels = [g if g == MACRO else f"{g}\n{percent(fractions.get(g))}" for g in groups]
    fig = Figure(
        figsize=(max(8.0, 0.28 * len(groups) * len(strategies) + 2.5), 2.6 * len(POLICIES) + 1.0), layout="constrained"
    )
    axes = fig.subplots(len(POLICIES), 1, sharex=True)
    for ax, policy in zip(axes, POLICIES, strict=False):
        _bars(ax, rows, strategies, [(policy, g) for g in groups], colours)
        ax.set_title(f"threshold {POLICY_LABELS[policy]}", fontsize=10, loc="left")
    axes[-1].set_xticks(range(len(groups)), labels, fontsize=8)
    axes[0].legend(ncol=min(len(strategies), 5), fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.12))
    fig.suptitle(
        f"{title}\nDice per channel, {caption} (under each channel: its share of training pixels)", fontsize=10
    )
    fig.savefig(path, dpi=100)


def plot_dice_vs_frequency(
    rows: list[dict],
    strategies: list[str],
    channels: list[str],
    fractions: dict,
    path: Path,
    title: str,
    reference: str | None,
) -> None:
    """Dice (left) and its paired difference from the reference (right) against channel frequency, log x."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    known = sorted((c for c in channels if fractions.get(c)), key=lambda c: fractions[c])
    if not known:
        return
    narrow = fractions[known[-1]] / fractions[known[0]] < 10  # under a decade: label the minor ticks too
    percent = FuncFormatter(lambda value, _: f"{100 * value:.3g}%")
    fig = Figure(figsize=(12, 5.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    colours = _colours(len(strategies))
    for k, strategy in enumerate(strategies):
        dodge = 10 ** ((k - (len(strategies) - 1) / 2) * 0.012)  # side by side on the log axis
        x = [fractions[c] * dodge for c in known]
        values = [_error(find(rows, strategy, "dice", "0.5", c)) for c in known]
        left.errorbar(
            x,
            [v[0] for v in values],
            yerr=[v[1] for v in values],
            marker="o",
            ms=4,
            capsize=2,
            color=colours[k],
            label=strategy,
            lw=1,
        )
        if reference in strategies and strategy != reference:
            diffs = [find(rows, strategy, "dice", "0.5", c) for c in known]
            means = [float("nan") if r is None or r["diff_mean"] is None else r["diff_mean"] for r in diffs]
            errors = [
                0.0 if r is None or r["diff_ci_high"] is None else r["diff_ci_high"] - r["diff_mean"] for r in diffs
            ]
            right.errorbar(x, means, yerr=errors, marker="o", ms=4, capsize=2, color=colours[k], label=strategy, lw=1)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(percent)
        ax.xaxis.set_minor_formatter(percent if narrow else NullFormatter())
        ax.set_xlabel("positive pixels of the channel in the training split (log scale)")
        ax.grid(alpha=0.3, which="both")
        for c in known:
            ax.annotate(
                c,
                (fractions[c], 1.0),
                xycoords=("data", "axes fraction"),
                rotation=60,
                fontsize=7,
                ha="left",
                va="bottom",
            )
            ax.axvline(fractions[c], color="0.85", lw=0.6, zorder=0)
    if len(known) == 1:
        for ax in (left, right):
            ax.set_xlim(fractions[known[0]] / 3, fractions[known[0]] * 3)
    left.set_ylim(0, 1)
    left.set_ylabel("Dice @0.5 (mean, 95% interval)")
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(strategies), 8), fontsize=8)
    right.axhline(0, color="black", lw=0.8)
    right.set_ylabel(f"Dice minus {reference} (paired by seed, 95% interval)")
    fig.suptitle(f"{title}\nwhere weighting helps, by channel frequency (threshold 0.5)", fontsize=10)
    fig.savefig(path, dpi=100)


def _colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(count)]
