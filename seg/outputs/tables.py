"""Markdown tables: the one table helper every Markdown writer of seg uses, and the results table of a ``val`` block.

Pure functions of plain data (typed results from :mod:`seg.results`); writing files is left to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from seg.results import RunSummary, ScoreBlock, Scores

DASH = "–"  # an undefined (null) value


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a Markdown table: the header, the ``---`` rule, one line per row (cells as ``str``)."""
    return ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(str, row)) + " |" for row in rows
    ]


def number(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; a dash when undefined."""
    return DASH if value is None else f"{value:.{digits}f}"


def percent(fraction: float | None) -> str:
    """A fraction as a percentage: two significant digits under 1%, else one decimal; ``?`` when unknown."""
    if fraction is None:
        return "?"
    return f"{100 * fraction:.2g}%" if fraction < 0.01 else f"{100 * fraction:.1f}%"


def results_table(val: Scores | dict, class_names: list[str], title: str | None = None) -> str:
    """Markdown: Dice and IoU per channel and averaged (macro, micro, per_image) under each
    threshold policy; then per channel the thresholds, ECE and the empty-image FP rate.

    ``val``: the ``val`` block of summary.json or ``metrics`` of eval-<split>.json (a dict is read as :class:`Scores`).
    """
    if not isinstance(val, Scores):
        val = Scores.from_dict(val, "the val block")
    blocks: dict[str, ScoreBlock] = val.by_threshold or {val.threshold: val}
    lines = [f"## {title}", ""] if title else []
    header = ["channel"] + [f"{metric} @ {policy}" for policy in blocks for metric in ("Dice", "IoU")]
    rows = [
        [name] + [number(getattr(b.per_channel[name], m)) for b in blocks.values() for m in ("dice", "iou")]
        for name in class_names
    ]
    rows.append(["**macro**"] + [f"**{number(getattr(b, m))}**" for b in blocks.values() for m in ("dice", "iou")])
    for average in ("micro", "per_image"):
        rows.append(
            [average] + [number(getattr(getattr(b, average), m)) for b in blocks.values() for m in ("dice", "iou")]
        )
    lines += markdown_table(header, rows)
    lines += ["", _details_table(val, blocks, class_names), ""]
    if val.ece.brier:
        lines += [_calibration_table(val, class_names), ""]
    if val.structure:
        lines += [_structure_table(val), ""]
    notes = [
        "Dice/IoU: macro = mean over channels of dataset-level scores; micro = counts pooled over "
        "images and channels; per_image = mean over images, then channels. "
        f"Empty policy: {val.empty_policy} ({DASH} = undefined)."
    ]
    if "tuned" in blocks and blocks["tuned"].note:
        notes.append(f"tuned: {blocks['tuned'].note}.")
    if val.threshold:
        notes.append(f"Reported threshold (metrics.threshold): {val.threshold}.")
    return "\n".join(lines + [" ".join(notes), ""])


def _details_table(val: Scores, blocks: dict[str, ScoreBlock], class_names: list[str]) -> str:
    ece = val.ece
    header = ["channel"] + [f"threshold {p}" for p in blocks if p != "0.5"]
    header += ["ECE raw", "ECE prior_corrected", *(f"empty-image FP rate @ {p}" for p in blocks)]
    rows = []
    for name in class_names:
        cells = [number(b.thresholds.get(name), 3) for p, b in blocks.items() if p != "0.5"]
        cells += [number(ece.raw.get(name)), number(ece.prior_corrected.get(name))]
        cells += [number(b.empty_image_fp_rate.get(name), 3) for b in blocks.values()]
        rows.append([name, *cells])
    mean = [""] * (len(blocks) - 1) + [number(ece.raw_mean), number(ece.prior_corrected_mean)]
    rows.append(["mean", *mean, *[""] * len(blocks)])
    return "\n".join(markdown_table(header, rows))


def _calibration_table(val: Scores, class_names: list[str]) -> str:
    """ECE and Brier score per channel for each calibration variant (raw, prior-corrected, Platt-scaled)."""
    ece, brier = val.ece, val.ece.brier or {}
    variants = [v for v in ("raw", "prior_corrected", "platt") if v in brier]
    header = ["channel"] + [f"ECE {v}" for v in variants] + [f"Brier {v}" for v in variants]
    if ece.platt_parameters:
        header += ["Platt a", "Platt b"]
    rows = []
    for name in class_names:
        cells = [number((getattr(ece, v) or {}).get(name)) for v in variants]
        cells += [number(brier[v].get(name)) for v in variants]
        if ece.platt_parameters:
            cells += [number(ece.platt_parameters[name]["a"], 3), number(ece.platt_parameters[name]["b"], 3)]
        rows.append([name, *cells])
    lines = markdown_table(header, rows)
    if ece.platt_fitted_on:
        lines.append(f"\nPlatt scaling sigmoid(a * logit + b), {ece.platt_fitted_on}.")
    return "\n".join(lines)


STRUCTURE_COLUMNS = {
    "v_rand": "V_rand",
    "v_info": "V_info",
    "ap": "AP 0.5:0.95",
    "ap50": "AP@0.5",
    "f1_50": "F1@0.5",
    "merges": "merges / image",
    "splits": "splits / image",
}


def _structure_table(val: Scores) -> str:
    """Structure metrics (mean over channels) under each threshold policy."""
    structure = val.structure
    assert structure is not None
    by_threshold = structure.by_threshold
    keys = [k for k in STRUCTURE_COLUMNS if any(k in b["mean"] for b in by_threshold.values())]
    rows = [
        [policy] + [number(block["mean"].get(k), 2 if k in ("merges", "splits") else 4) for k in keys]
        for policy, block in by_threshold.items()
    ]
    lines = markdown_table(["threshold"] + [STRUCTURE_COLUMNS[k] for k in keys], rows)
    lines.append(
        f"\nStructure ({structure.num_images} images, objects from the {structure.objects_from} class): "
        f"{structure.note}."
    )
    return "\n".join(lines)


def print_results(summary: RunSummary | dict, class_names: list[str]) -> None:
    """The results table printed at the end of a training run (the final epoch's ``val`` block)."""
    if not isinstance(summary, RunSummary):
        summary = RunSummary.from_dict(summary, "the run summary")
    print()
    print(
        f"weighting: {summary.weighting}   effective pos_weight: "
        + ", ".join(f"{q:.3g}" for q in summary.effective_pos_weight)
        + f"   epochs: {summary.epochs_completed} (best.pt: epoch {summary.best_epoch})"
    )
    print(results_table(summary.val, class_names))
