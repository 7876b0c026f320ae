"""results.md's text: what ran and how it is summarised, then the tables, from the manifest and the
aggregated rows (:func:`seg.experiments.aggregate.aggregate`)."""

from __future__ import annotations

from seg.experiments.aggregate import CURVE_SHARE, MACRO, find
from seg.experiments.manifest import Budget, Manifest
from seg.experiments.paired import ImageComparison, format_comparison
from seg.experiments.plots import PLOTS
from seg.outputs.tables import DASH, markdown_table, percent
from seg.results import Provenance
from seg.scoring.policies import POLICIES, POLICY_LABELS

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


def _images(row: dict | None) -> str:
    """The paired statistics over images of a test row: bootstrap interval, Wilcoxon p (Holm)."""
    if row is None or row.get("image_diff_mean") is None:
        return DASH
    comparison = ImageComparison(
        n_images=row["images"],
        mean_difference=row["image_diff_mean"],
        ci_low=row["image_diff_ci_low"],
        ci_high=row["image_diff_ci_high"],
        p_value=row["image_p"],
        p_holm=row["image_p_holm"],
    )
    return format_comparison(comparison)


# ------------------------------------------------------------------ results.md


def results_markdown(manifest: Manifest, rows: list[dict], provenance: list[Provenance | None]) -> str:
    """The whole results.md: a header that says what ran and how it is summarised, then tables.

    ``manifest``: experiment.json; ``provenance``: each run's record (its summary's), in the manifest's order.
    """
    strategies, seeds = list(manifest.strategies), manifest.seeds
    channels, fractions = manifest.classes, manifest.train_positive_fraction
    reference, n_seeds = manifest.reference, len(seeds)
    data = manifest.data
    tested = manifest.test is not None and any(r.get("split") == "test" for r in rows)  # test scores exist
    lines = [
        f"### {manifest.title_text}: `{manifest.experiment}`, profile `{manifest.profile}`",
        "",
    ]
    lines += [
        f"- **Data**: `{data.root}` ({data.mask_format} masks), split seed {data.split_seed}; "
        "channels (positive pixels in the training split): "
        + ", ".join(f"{c} {percent(fractions.get(c))}" for c in channels)
        + ".",
        f"- **Grid**: {len(strategies)} strategies x {n_seeds} seeds ({', '.join(map(str, seeds))}) = "
        f"{len(strategies) * n_seeds} runs; every strategy gets the same split, augmentation seeds (run.seed) "
        "and budget.",
        "- **Strategies** (each one's overrides): "
        + "; ".join(f"`{name}`: " + ", ".join(f"`{o}`" for o in manifest.strategies[name]) for name in strategies)
        + ".",
        f"- **Budget**: {budget_text(manifest.budget)}.",
        "- **Reported epoch**: the last epoch of this fixed budget; no checkpoint or epoch is selected on "
        "validation (best.pt, chosen on validation Dice, is not used here).",
        "- **Thresholds**: 0.5; prior-corrected (logit threshold log q_eff per channel, q_eff the effective "
        "pos_weight); tuned per channel on validation. "
        + (
            "On the test split the thresholds (and Platt scaling) chosen on validation are applied unchanged; "
            "the validation tables score them on the images they were tuned on: tuned on val (optimistic)."
            if tested
            else "No held-out test split was scored in this grid: tuned is scored on the images it was tuned on: "
            "tuned on val (optimistic)."
        ),
        "- **Intervals**: mean ± half-width of the 95% Student t interval over seeds, "
        "t_{0.975, n-1} · sd / √n (sd with n-1, scipy.stats.t). Differences from "
        f"`{reference}` are paired by seed: the mean of the per-seed differences with the same t interval on "
        "those differences; **bold** where the interval excludes 0. An interval that contains 0 means no "
        f"difference is detectable with {n_seeds} seeds. (n=k) marks cells where only k runs had a value "
        "(a score is undefined, under the empty policy, when a channel is empty in truth and prediction).",
        *(_test_bullets(manifest, reference) if tested else []),
        f"- **Regenerate**: `{manifest.command}` (trains what is missing, resumes, skips finished runs); "
        f"from the committed per-run summaries in `runs/` alone: `{manifest.aggregate_command}`.",
        f"- **Provenance**: {provenance_text(provenance)}",
        "",
    ]
    lines += _test_tables(manifest, rows, strategies, reference, n_seeds)
    lines += _macro_tables(manifest, rows, strategies, reference, n_seeds)
    if len(channels) > 1:
        head = ["strategy"] + [f"{c} ({percent(fractions.get(c))})" for c in channels]
        for policy in POLICIES:
            lines += [f"#### Per-channel Dice, threshold {POLICY_LABELS[policy]}", ""]
            lines += markdown_table(
                head,
                [[s] + [_mean(find(rows, s, "dice", policy, c), 3, n_seeds) for c in channels] for s in strategies],
            ) + [""]
        if reference in strategies:
            lines += [f"#### Per-channel Dice minus `{reference}` (paired by seed), threshold 0.5", ""]
            lines += markdown_table(
                head,
                [
                    [s] + [_difference(find(rows, s, "dice", "0.5", c)) for c in channels]
                    for s in strategies
                    if s != reference
                ],
            ) + [""]
    lines += _budget_check(manifest, rows, reference, n_seeds)
    lines += [
        "#### Applied weights: effective pos_weight in the last epoch",
        "",
        "Mean weight on positive pixels / mean weight on negative pixels, per channel, as applied in the last "
        "epoch (1 = unweighted); mean over seeds, with the sd over seeds where it varies.",
        "",
    ]
    lines += markdown_table(
        ["strategy"] + channels,
        [[s] + [_weight(find(rows, s, "effective_pos_weight", "", c)) for c in channels] for s in strategies],
    ) + [""]
    base = f"/{manifest.results_dir}" if manifest.results_dir else "."
    lines += [f"![Dice with 95% intervals]({base}/{PLOTS['dice_per_channel']})", ""]
    if len(channels) > 1:
        lines += [f"![Dice against channel frequency]({base}/{PLOTS['dice_vs_frequency']})", ""]
    lines += ["Every number, per channel and for IoU too, is in `results.csv` beside this file."]
    return "\n".join(lines) + "\n"


LEARNED_MARGIN = 0.05  # the reference has learned a channel when it beats predicting it everywhere by this much
FLAT = 0.01  # and the budget has converged when the validation curve moved by less than this at the end


def _budget_check(manifest: Manifest, rows: list[dict], reference: str | None, n_seeds: int) -> list[str]:
    """Has the reference learned every channel (tuned validation Dice above the Dice 2f/(1+f) of predicting
    the channel everywhere, f its training frequency, by LEARNED_MARGIN) and has its curve flattened?"""
    if reference is None or find(rows, reference, "dice", "tuned", MACRO) is None:
        return []
    lines = [
        f"#### Budget check: has `{reference}` learned every channel, and converged?",
        "",
        "A channel is learned when the validation Dice at the tuned threshold beats, by at least "
        f"{LEARNED_MARGIN}, the Dice 2f/(1+f) of predicting it on every pixel (f: its frequency in the training "
        "split). Mean over seeds.",
        "",
    ]
    table = []
    for channel in manifest.classes:
        f = manifest.train_positive_fraction.get(channel)
        row = find(rows, reference, "dice", "tuned", channel)
        everywhere = 2 * f / (1 + f) if f is not None else None
        dice = row["mean"] if row else None
        margin = dice - everywhere if dice is not None and everywhere is not None else None
        verdict = "?" if margin is None else ("yes" if margin >= LEARNED_MARGIN else "**no**")
        table.append(
            [
                channel,
                percent(f),
                "" if everywhere is None else f"{everywhere:.3f}",
                _mean(row, 3, n_seeds),
                "" if margin is None else f"{margin:+.3f}",
                verdict,
            ]
        )
    lines += markdown_table(
        ["channel", "f", "Dice predicting all", f"`{reference}` Dice @tuned (val)", "margin", "learned"], table
    ) + [""]
    change = find(rows, reference, "curve_change", "tuned", MACRO)
    if change is None:
        lines += ["Convergence: these summaries do not record the validation curve.", ""]
    else:
        flat = "flat" if change["mean"] < FLAT else "**still moving**"
        lines += [
            f"Convergence: over the last {CURVE_SHARE:.0%} of the epochs the macro validation Dice @tuned of "
            f"`{reference}` moved by {change['mean']:.3f} (max - min over those epochs and the one before, mean "
            f"over {change['n']} seeds): {flat} (threshold {FLAT}).",
            "",
        ]
    return lines


def _test_bullets(manifest: Manifest, reference: str | None) -> list[str]:
    test = manifest.test
    if test is None:
        return []
    return [
        f"- **Test split**: {test.num_images} labelled images, {test.source}, never used for training, thresholds or "
        f"calibration. Every run's final model ({test.checkpoint}.pt) is scored on it with the tuned thresholds "
        "and the Platt scaling sigmoid(a·logit + b) chosen on its validation split (`runs/<run>.eval-test.json` "
        "records the split, number of images and stems hash of both). Test numbers are the headline; "
        "validation numbers (the last epoch's validation pass) follow.",
        f"- **Statistics over images** (test): per image, the score is averaged over seeds; the difference from "
        f"`{reference}` is then paired by image: mean [95% paired bootstrap interval, 10,000 resamples], "
        "p of the Wilcoxon signed-rank test over images (two-sided) and its Holm adjustment over the strategies; "
        '**bold** where Holm p < 0.05. Read the seed interval for "would another training run of this '
        'strategy differ?" (it carries training noise, but 3 seeds give a wide interval); read the image '
        'statistics for "on images like these, does this strategy\'s model score differently?" (more images '
        "give power, but the seeds' training noise is averaged, not tested, and the images are taken as "
        "independent: neighbouring video frames or slices of one volume make these intervals too narrow).",
    ]


def _structure_keys(rows: list[dict], split: str) -> list[str]:
    return [k for k in ("v_rand", "v_info", "ap") if any(r["quantity"] == k and r["split"] == split for r in rows)]


def _test_tables(
    manifest: Manifest, rows: list[dict], strategies: list[str], reference: str | None, n_seeds: int
) -> list[str]:
    """The headline: the held-out test split, choices made on validation."""
    if manifest.test is None or not any(r.get("split") == "test" for r in rows):
        return []

    def mean(s: str, quantity: str, variant: str, digits: int = 3) -> str:
        return _mean(find(rows, s, quantity, variant, MACRO, "test"), digits, n_seeds)

    n = manifest.test.num_images
    lines = [f"#### Test split ({n} images): macro scores, thresholds and calibration chosen on validation", ""]
    head = [
        "strategy",
        "Dice @0.5",
        "Dice @prior-corrected",
        "Dice @tuned (val-chosen)",
        "IoU @tuned",
        "ECE raw",
        "ECE prior-corrected",
        "ECE Platt",
        "Brier raw",
        "Brier Platt",
    ]
    body = [
        [
            s,
            mean(s, "dice", "0.5"),
            mean(s, "dice", "prior_corrected"),
            mean(s, "dice", "tuned"),
            mean(s, "iou", "tuned"),
            mean(s, "ece", "raw"),
            mean(s, "ece", "prior_corrected"),
            mean(s, "ece", "platt"),
            mean(s, "brier", "raw"),
            mean(s, "brier", "platt"),
        ]
        for s in strategies
    ]
    lines += markdown_table(head, body) + [""]
    structure = _structure_keys(rows, "test")
    names = {"v_rand": "V_rand", "v_info": "V_info", "ap": "AP 0.5:0.95"}
    if structure:
        lines += [
            f"#### Test split: structure of the objects, mean over images (objects: {manifest.test.objects})",
            "",
        ]
        head = ["strategy"]
        head += [f"{names[k]} @{p}" for k in structure for p in ("0.5", "tuned")]
        head += ["merges / image @tuned", "splits / image @tuned"]
        body = [
            [s]
            + [mean(s, k, p) for k in structure for p in ("0.5", "tuned")]
            + [mean(s, "merges", "tuned", 1), mean(s, "splits", "tuned", 1)]
            for s in strategies
        ]
        lines += markdown_table(head, body) + [""]
        lines += [
            "V_rand and V_info: the ISBI 2012 challenge's foreground-restricted Rand and information-theoretic "
            "scores of the regions the prediction encloses, per image at the policy's threshold, unthinned (the "
            "challenge reports the best over thresholds after thinning). AP: object-level average precision "
            "over IoU thresholds 0.5:0.05:0.95 (matches at IoU > t, one to one).",
            "",
        ]
    if reference in strategies:
        lines += [f"#### Test split: differences from `{reference}`, by seed and by image", ""]
        quantities = [("dice", "tuned", "ΔDice @tuned"), ("dice", "0.5", "ΔDice @0.5")]
        quantities += [(k, "tuned", f"Δ{names[k]} @tuned") for k in structure]
        head = ["strategy"]
        for _, _, label in quantities:
            head += [f"{label} (seeds)", f"{label} (images)"]
        body = []
        for s in strategies:
            if s == reference:
                continue
            cells = [s]
            for quantity, policy, _ in quantities:
                row = find(rows, s, quantity, policy, MACRO, "test")
                cells += [_difference(row), _images(row)]
            body.append(cells)
        lines += markdown_table(head, body) + [""]
    lines += ["The validation tables below come from the runs' summaries (the last epoch's validation).", ""]
    return lines


def provenance_text(records: list[Provenance | None]) -> str:
    """One sentence from the runs' provenance blocks (in grid order): commits, libraries, device."""
    known = [r for r in records if r]
    if not known:
        return "not recorded (runs trained before provenance was written into summary.json)."
    commits = list(dict.fromkeys((r.commit or "unknown")[:10] for r in known))
    dirty = sum(1 for r in known if r.dirty)
    if len(commits) == 1:
        where = f"trained at commit `{commits[0]}`"
    else:
        where = f"trained from commit `{commits[0]}` to `{commits[-1]}` ({len(commits)} commits: {', '.join(commits)})"
    where += f", {dirty} of {len(known)} runs with uncommitted changes" if dirty else ", clean tree"
    if len(known) < len(records):
        where += f"; {len(records) - len(known)} runs without a record"
    shown = ("python", "torch", "segmentation_models_pytorch", "numpy")
    libraries = ", ".join(f"{k} {v}" for k, v in known[-1].versions.items() if k in shown and v)
    device = known[-1].device
    machine = f"{device.get('name')}, {device.get('torch_threads')} threads" if device else "unrecorded device"
    return f"{where}; {libraries}; {machine}. Each run's full record is in `runs/<run>.json` (`provenance`)."


def _measured_on(manifest: Manifest) -> str:
    """Where and how the runs were trained, from the manifest's per-run records (or an older manifest's one)."""
    counts: dict[str, int] = {}
    for record in manifest.training_records():
        key = f"on {record.machine or 'an unrecorded machine'} with --jobs {record.jobs}"
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "training conditions not recorded"
    if len(counts) == 1:
        return f"measured {next(iter(counts))}"
    return "measured " + "; ".join(f"{key} ({n} runs)" for key, n in sorted(counts.items()))


def budget_text(budget: Budget) -> str:
    samples = budget.samples_per_epoch
    crops = f"{samples} random crops" if samples else "one random crop per training image"
    steps = f", at most {budget.max_steps_per_epoch} steps per epoch" if budget.max_steps_per_epoch else ""
    val = budget.max_val_images
    epochs = f"{budget.epochs} epoch{'s' if budget.epochs != 1 else ''}"
    return (
        f"{epochs} of {crops} of {budget.image_size} px per epoch (batch "
        f"{budget.batch_size}{steps}), {budget.arch}/{budget.encoder} "
        f"({budget.encoder_weights or 'from scratch'}), lr {budget.lr:g}, "
        f"loss.normalize {str(budget.normalize).lower()}, validation on "
        + (f"the first {val} validation images" if val else "every validation image")
    )


def _macro_tables(
    manifest: Manifest, rows: list[dict], strategies: list[str], reference: str | None, n_seeds: int
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
    lines += markdown_table(head, body) + [""]
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
        lines += markdown_table(head, body) + [""]
    return lines
