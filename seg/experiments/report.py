"""The comparison's outputs, written from a results folder alone.

A results folder (``experiments/results/<experiment>-<profile>/``) holds the manifest
``experiment.json`` and a copy of every run's summary.json in ``runs/``. From them:
results.md (people; also copied into the README between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->``), results.csv (every row of :func:`seg.experiments.aggregate.aggregate`),
and two plots: per-channel Dice with intervals, and Dice against the channel's
frequency in the training split. The rows also go to W&B as a Table unless disabled.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from seg.config import ConfigError, expand_path
from seg.experiments.aggregate import CSV_COLUMNS, MACRO, aggregate, find, format_csv_value
from seg.scoring.policies import POLICIES, POLICY_LABELS

PLOTS = {"dice_per_channel": "dice_per_channel.png", "dice_vs_frequency": "dice_vs_frequency.png"}
DASH = "–"
MANIFEST = "experiment.json"  # written by seg.experiments.grid, read here


# ------------------------------------------------------------------ numbers as text


def _mean(row: dict | None, digits: int = 3, seeds: int | None = None) -> str:
    """``0.712 ± 0.015``; ``0.712 (n=1)`` without an interval; ``–`` when absent."""
    if row is None or row["mean"] is None:
        return DASH
    text = f"{row['mean']:.{digits}f}"
    if row["ci_high"] is not None:
        text += f" ± {row['ci_high'] - row['mean']:.{digits}f}"
    if row["ci_high"] is None or (seeds is not None and row["n"] < seeds):
        text += f" (n={row['n']})"
    return text


def _difference(row: dict | None, digits: int = 3) -> str:
    """``+0.012 [-0.004, +0.028]``, bold when the interval excludes 0."""
    if row is None or row["diff_mean"] is None:
        return DASH
    text = f"{row['diff_mean']:+.{digits}f}"
    if row["diff_ci_low"] is None:
        return f"{text} (n={row['diff_n']})"
    text += f" [{row['diff_ci_low']:+.{digits}f}, {row['diff_ci_high']:+.{digits}f}]"
    return f"**{text}**" if row["diff_ci_low"] > 0 or row["diff_ci_high"] < 0 else text


def _weight(row: dict | None) -> str:
    """A weight to 3 significant digits, with its range over seeds where it varies (per_batch, maps)."""
    if row is None or row["mean"] is None:
        return DASH
    text = f"{row['mean']:.3g}"
    return text if not row["sd"] or row["sd"] < 5e-4 * abs(row["mean"]) else f"{text} (sd {row['sd']:.2g})"


def _percent(fraction: float | None) -> str:
    if fraction is None:
        return "?"
    return f"{100 * fraction:.2g}%" if fraction < 0.01 else f"{100 * fraction:.1f}%"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(cells) + " |" for cells in lines]


# ------------------------------------------------------------------ results.md


def results_markdown(manifest: dict, rows: list[dict]) -> str:
    """The whole results.md: a header that says what ran and how it is summarised, then tables."""
    strategies, seeds = list(manifest["strategies"]), manifest["seeds"]
    channels, fractions = manifest["classes"], manifest.get("train_positive_fraction") or {}
    reference, budget, n_seeds = manifest.get("reference"), manifest["budget"], len(seeds)
    data = manifest["data"]
    lines = [
        f"### {manifest.get('title') or manifest['experiment']}: `{manifest['experiment']}`, "
        f"profile `{manifest['profile']}`",
        "",
    ]
    lines += [
        f"- **Data**: `{data['root']}` ({data['mask_format']} masks), split seed {data['split_seed']}; "
        "channels (positive pixels in the training split): "
        + ", ".join(f"{c} {_percent(fractions.get(c))}" for c in channels)
        + ".",
        f"- **Grid**: {len(strategies)} strategies x {n_seeds} seeds ({', '.join(map(str, seeds))}) = "
        f"{len(strategies) * n_seeds} runs; every strategy gets the same split, augmentation seeds (run.seed) "
        "and budget.",
        f"- **Budget**: {budget_text(budget)}.",
        "- **Reported epoch**: the last epoch of this fixed budget; no checkpoint or epoch is selected on "
        "validation (best.pt, chosen on validation Dice, is not used here).",
        "- **Thresholds**: 0.5; prior-corrected (logit threshold log q_eff per channel, q_eff the effective "
        "pos_weight); tuned per channel on the validation images it is scored on: tuned on val (optimistic).",
        "- **Intervals**: mean ± half-width of the 95% Student t interval over seeds, "
        "t_{0.975, n-1} · sd / √n (sd with n-1, scipy.stats.t). Differences from "
        f"`{reference}` are paired by seed: the mean of the per-seed differences with the same t interval on "
        "those differences; **bold** where the interval excludes 0. An interval that contains 0 means no "
        f"difference is detectable with {n_seeds} seeds. (n=k) marks cells where only k runs had a value "
        "(a score is undefined, under the empty policy, when a channel is empty in truth and prediction).",
        f"- **Regenerate**: `{manifest['command']}` (trains what is missing, resumes, skips finished runs); "
        f"from the committed per-run summaries in `runs/` alone: `{manifest['aggregate_command']}`.",
        f"- **Provenance**: {provenance_text(manifest.get('run_provenance') or [])}",
        "",
    ]
    lines += _macro_tables(manifest, rows, strategies, reference, n_seeds)
    if len(channels) > 1:
        head = ["strategy"] + [f"{c} ({_percent(fractions.get(c))})" for c in channels]
        for policy in POLICIES:
            lines += [f"#### Per-channel Dice, threshold {POLICY_LABELS[policy]}", ""]
            lines += _table(
                head,
                [[s] + [_mean(find(rows, s, "dice", policy, c), 3, n_seeds) for c in channels] for s in strategies],
            ) + [""]
        if reference in strategies:
            lines += [f"#### Per-channel Dice minus `{reference}` (paired by seed), threshold 0.5", ""]
            lines += _table(
                head,
                [
                    [s] + [_difference(find(rows, s, "dice", "0.5", c)) for c in channels]
                    for s in strategies
                    if s != reference
                ],
            ) + [""]
    lines += [
        "#### Applied weights: effective pos_weight in the last epoch",
        "",
        "Mean weight on positive pixels / mean weight on negative pixels, per channel, as applied in the last "
        "epoch (1 = unweighted); mean over seeds, with the sd over seeds where it varies.",
        "",
    ]
    lines += _table(
        ["strategy"] + channels,
        [[s] + [_weight(find(rows, s, "effective_pos_weight", "", c)) for c in channels] for s in strategies],
    ) + [""]
    base = f"/{manifest['results_dir']}" if manifest.get("results_dir") else "."
    lines += [f"![Dice with 95% intervals]({base}/{PLOTS['dice_per_channel']})", ""]
    if len(channels) > 1:
        lines += [f"![Dice against channel frequency]({base}/{PLOTS['dice_vs_frequency']})", ""]
    lines += ["Every number, per channel and for IoU too, is in `results.csv` beside this file."]
    return "\n".join(lines) + "\n"


def provenance_text(records: list[dict | None]) -> str:
    """One sentence from the runs' provenance blocks (in grid order): commits, libraries, device."""
    known = [r for r in records if r]
    if not known:
        return "not recorded (runs trained before provenance was written into summary.json)."
    commits = list(dict.fromkeys((r.get("commit") or "unknown")[:10] for r in known))
    dirty = sum(1 for r in known if r.get("dirty"))
    if len(commits) == 1:
        where = f"trained at commit `{commits[0]}`"
    else:
        where = f"trained from commit `{commits[0]}` to `{commits[-1]}` ({len(commits)} commits: {', '.join(commits)})"
    where += f", {dirty} of {len(known)} runs with uncommitted changes" if dirty else ", clean tree"
    if len(known) < len(records):
        where += f"; {len(records) - len(known)} runs without a record"
    versions = known[-1].get("versions") or {}
    shown = ("python", "torch", "segmentation_models_pytorch", "numpy")
    libraries = ", ".join(f"{k} {v}" for k, v in versions.items() if k in shown and v)
    device = known[-1].get("device") or {}
    machine = f"{device.get('name')}, {device.get('torch_threads')} threads" if device else "unrecorded device"
    return f"{where}; {libraries}; {machine}. Each run's full record is in `runs/<run>.json` (`provenance`)."


def _measured_on(manifest: dict) -> str:
    """Where and how the runs were trained, from the manifest's per-run records."""
    records = list((manifest.get("trained_with") or {}).values())
    if not records and "jobs" in manifest:  # a manifest from before per-run records
        records = [{"jobs": manifest["jobs"], "machine": manifest.get("machine")}]
    counts: dict[str, int] = {}
    for record in records:
        key = f"on {record.get('machine') or 'an unrecorded machine'} with --jobs {record.get('jobs')}"
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "training conditions not recorded"
    if len(counts) == 1:
        return f"measured {next(iter(counts))}"
    return "measured " + "; ".join(f"{key} ({n} runs)" for key, n in sorted(counts.items()))


def budget_text(budget: dict) -> str:
    samples = budget.get("samples_per_epoch")
    crops = f"{samples} random crops" if samples else "one random crop per training image"
    steps = f", at most {budget['max_steps_per_epoch']} steps per epoch" if budget.get("max_steps_per_epoch") else ""
    val = budget.get("max_val_images")
    epochs = f"{budget['epochs']} epoch{'s' if budget['epochs'] != 1 else ''}"
    return (
        f"{epochs} of {crops} of {budget['image_size']} px per epoch (batch "
        f"{budget['batch_size']}{steps}), {budget['arch']}/{budget['encoder']} "
        f"({budget.get('encoder_weights') or 'from scratch'}), lr {budget['lr']:g}, "
        f"loss.normalize {str(budget['normalize']).lower()}, validation on "
        + (f"the first {val} validation images" if val else "every validation image")
    )


def _macro_tables(
    manifest: dict, rows: list[dict], strategies: list[str], reference: str | None, n_seeds: int
) -> list[str]:
    lines = ["#### Macro scores (mean over channels)", ""]
    head = [
        "strategy",
        "Dice @0.5",
        "IoU @0.5",
        "Dice @prior-corrected",
        "Dice @tuned (val, optimistic)",
        "ECE raw",
        "ECE prior-corrected",
        "s / epoch",
    ]
    body = []
    for s in strategies:
        wall = find(rows, s, "wall_time_per_epoch_s")
        body.append(
            [
                s,
                _mean(find(rows, s, "dice", "0.5", MACRO), 3, n_seeds),
                _mean(find(rows, s, "iou", "0.5", MACRO), 3, n_seeds),
                _mean(find(rows, s, "dice", "prior_corrected", MACRO), 3, n_seeds),
                _mean(find(rows, s, "dice", "tuned", MACRO), 3, n_seeds),
                _mean(find(rows, s, "ece", "raw", MACRO), 3, n_seeds),
                _mean(find(rows, s, "ece", "prior_corrected", MACRO), 3, n_seeds),
                DASH if wall is None else f"{wall['mean']:.1f}",
            ]
        )
    lines += _table(head, body) + [""]
    lines += [f"s / epoch: mean wall time of an epoch (training and validation), {_measured_on(manifest)}.", ""]
    if reference in strategies:
        lines += [f"#### Macro differences from `{reference}` (paired by seed)", ""]
        head = ["strategy", "ΔDice @0.5", "ΔIoU @0.5", "ΔDice @prior-corrected", "ΔDice @tuned", "ΔECE raw"]
        body = [
            [
                s,
                _difference(find(rows, s, "dice", "0.5", MACRO)),
                _difference(find(rows, s, "iou", "0.5", MACRO)),
                _difference(find(rows, s, "dice", "prior_corrected", MACRO)),
                _difference(find(rows, s, "dice", "tuned", MACRO)),
                _difference(find(rows, s, "ece", "raw", MACRO)),
            ]
            for s in strategies
            if s != reference
        ]
        lines += _table(head, body) + [""]
    return lines


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([format_csv_value(row[c]) for c in CSV_COLUMNS])


# ------------------------------------------------------------------ plots (matplotlib, Agg, no pyplot)


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
            f"{title}\nDice of {channels[0]} ({_percent(fractions.get(channels[0]))} of training pixels), {caption}",
            fontsize=10,
        )
        fig.savefig(path, dpi=100)
        return
    groups = [*channels, MACRO]
    labels = [g if g == MACRO else f"{g}\n{_percent(fractions.get(g))}" for g in groups]
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


# ------------------------------------------------------------------ a results folder


def read_results(results_dir: Path) -> tuple[dict, dict[str, dict[int, dict]]]:
    """The manifest and ``runs[strategy][seed] = summary`` from ``results_dir`` (committed files only)."""
    manifest_path = results_dir / MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"{manifest_path}: missing; run compare.py without --aggregate-only first")
    manifest = json.loads(manifest_path.read_text())
    runs: dict[str, dict[int, dict]] = {name: {} for name in manifest["strategies"]}
    missing = []
    for run in manifest["runs"]:
        path = results_dir / "runs" / f"{run['name']}.json"
        if path.is_file():
            runs[run["strategy"]][run["seed"]] = json.loads(path.read_text())
        else:
            missing.append(run["name"])
    if missing:
        raise ConfigError(
            f"{results_dir / 'runs'}: {len(missing)} of {len(manifest['runs'])} run summaries missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); run compare.py to train them"
        )
    return manifest, runs


def summary_fractions(runs: dict[str, dict[int, dict]], classes: list[str]) -> dict[str, float] | None:
    """Training-split positive fractions from a run summary, where fit() reports them."""
    for by_seed in runs.values():
        for summary in by_seed.values():
            fractions = summary.get("train_positive_fraction")
            if isinstance(fractions, dict) and all(c in fractions for c in classes):
                return {c: float(fractions[c]) for c in classes}
            if isinstance(fractions, list) and len(fractions) == len(classes):
                return dict(zip(classes, map(float, fractions), strict=False))
    return None


def aggregate_directory(results_dir: Path) -> list[dict]:
    """Write results.md, results.csv and the plots from ``results_dir``; return the rows."""
    manifest, runs = read_results(results_dir)
    classes = manifest["classes"]
    manifest["train_positive_fraction"] = summary_fractions(runs, classes) or manifest.get("train_positive_fraction")
    manifest["run_provenance"] = [runs[run["strategy"]][run["seed"]].get("provenance") for run in manifest["runs"]]
    rows = aggregate(runs, classes, manifest.get("reference"))
    (results_dir / "results.md").write_text(results_markdown(manifest, rows))
    write_csv(rows, results_dir / "results.csv")
    strategies, fractions = list(manifest["strategies"]), manifest.get("train_positive_fraction") or {}
    title = manifest.get("title") or manifest["experiment"]
    plot_dice_per_channel(rows, strategies, classes, fractions, results_dir / PLOTS["dice_per_channel"], title)
    if len(classes) > 1:  # one channel: a single point, nothing to read off
        plot_dice_vs_frequency(
            rows,
            strategies,
            classes,
            fractions,
            results_dir / PLOTS["dice_vs_frequency"],
            title,
            manifest.get("reference"),
        )
    log_results_table(manifest, rows)
    return rows


def log_results_table(manifest: dict, rows: list[dict]) -> None:
    """The rows as a W&B Table in a run of the experiment's group (not when W&B is disabled)."""
    from seg.tracking import Tracker

    wandb = manifest.get("wandb") or {}
    if wandb.get("mode", "disabled") == "disabled":
        return
    name = f"{manifest['experiment']}-{manifest['profile']}-results"
    run_dir = expand_path(wandb["out_dir"]) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(
        run_dir,
        wandb["mode"],
        wandb["project"],
        wandb.get("group"),
        name,
        {k: manifest[k] for k in ("experiment", "profile", "strategies", "seeds", "budget")},
        tags=["comparison"],
    )
    tracker.log_table("comparison/results", list(CSV_COLUMNS), [[row[c] for c in CSV_COLUMNS] for row in rows])
    tracker.finish()


def update_readme(readme: Path, results_dir: Path) -> None:
    """Replace the README block ``<!-- results:NAME -->`` (NAME = the results folder) by results.md."""
    name = results_dir.name
    if not readme.is_file():
        raise ConfigError(f"{readme}: not found")
    try:
        text = replace_readme_block(readme.read_text(), name, (results_dir / "results.md").read_text())
    except ValueError as err:
        raise ConfigError(f"{readme}: {err}; add them where the table should go") from None
    readme.write_text(text)


# ------------------------------------------------------------------ README blocks


def _block_pattern(name: str | None = None) -> re.Pattern:
    label = re.escape(name) if name else r"[^\s>]+"
    return re.compile(rf"<!-- results:(?P<name>{label}) -->\n?(?P<body>.*?)<!-- /results:(?P=name) -->", re.S)


def readme_blocks(text: str) -> dict[str, str]:
    """``{NAME: text between the markers}`` for every results block of a README."""
    return {m.group("name"): m.group("body") for m in _block_pattern().finditer(text)}


def replace_readme_block(text: str, name: str, markdown: str) -> str:
    """README text with the block NAME replaced by ``markdown``; ValueError when the markers are missing."""
    pattern = _block_pattern(name)
    if not pattern.search(text):
        raise ValueError(f"no <!-- results:{name} --> ... <!-- /results:{name} --> markers")
    block = f"<!-- results:{name} -->\n{markdown.rstrip()}\n<!-- /results:{name} -->"
    return pattern.sub(lambda _: block, text, count=1)
