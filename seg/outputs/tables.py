"""Evaluation results for people: a Markdown table from a ``val`` block, and overlay grids.

Pure functions of plain data (the ``val`` dict of summary.json / eval-<split>.json,
numpy arrays); writing files is left to the caller, except :func:`save_overlay_grid`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.outputs.figures import save_figure

# Channel colours (RGB), from matplotlib's tab10: distinguishable, colour-blind friendlier than pure RGB.
PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ],
    dtype=np.uint8,
)


def _cell(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(val: dict, class_names: list[str], title: str | None = None) -> str:
    """Markdown: Dice and IoU per channel and averaged (macro, micro, per_image) under each
    threshold policy; then per channel the thresholds, ECE and the empty-image FP rate."""
    blocks = val.get("by_threshold") or {val.get("threshold", "0.5"): val}
    lines = [f"## {title}", ""] if title else []
    header = ["channel"] + [f"{metric} @ {policy}" for policy in blocks for metric in ("Dice", "IoU")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in class_names:
        cells = [_cell(b["per_channel"][name][m]) for b in blocks.values() for m in ("dice", "iou")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| **macro** | " + " | ".join(f"**{_cell(b[m])}**" for b in blocks.values() for m in ("dice", "iou")) + " |"
    )
    for average in ("micro", "per_image"):
        lines.append(
            f"| {average} | "
            + " | ".join(_cell(b[average][m]) for b in blocks.values() for m in ("dice", "iou"))
            + " |"
        )
    lines += ["", _details_table(val, blocks, class_names), ""]
    notes = [
        "Dice/IoU: macro = mean over channels of dataset-level scores; micro = counts pooled over "
        "images and channels; per_image = mean over images, then channels. "
        f"Empty policy: {val.get('empty_policy')} (– = undefined)."
    ]
    if "tuned" in blocks and blocks["tuned"].get("note"):
        notes.append(f"tuned: {blocks['tuned']['note']}.")
    chosen = val.get("threshold")
    if chosen:
        notes.append(f"Reported threshold (metrics.threshold): {chosen}.")
    return "\n".join(lines + [" ".join(notes), ""])


def _details_table(val: dict, blocks: dict, class_names: list[str]) -> str:
    ece = val.get("ece", {})
    header = ["channel"] + [f"threshold {p}" for p in blocks if p != "0.5"]
    header += ["ECE raw", "ECE prior_corrected"] if ece else []
    header += [f"empty-image FP rate @ {p}" for p in blocks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in class_names:
        cells = [_cell(b.get("thresholds", {}).get(name), 3) for p, b in blocks.items() if p != "0.5"]
        if ece:
            cells += [_cell(ece["raw"].get(name)), _cell(ece["prior_corrected"].get(name))]
        cells += [_cell(b.get("empty_image_fp_rate", {}).get(name), 3) for b in blocks.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if ece:
        mean = [""] * (len(blocks) - 1) + [_cell(ece.get("raw_mean")), _cell(ece.get("prior_corrected_mean"))]
        lines.append("| mean | " + " | ".join(mean + [""] * len(blocks)) + " |")
    return "\n".join(lines)


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """image uint8 [H,W,3]; masks [H,W,C] in {0,1}: channel c blended in PALETTE[c] (in channel
    order, so later channels lie on top where labels overlap). Returns uint8 [H,W,3]."""
    out = image.astype(np.float32)
    for c in range(masks.shape[-1]):
        on = masks[..., c] > 0
        out[on] = (1 - alpha) * out[on] + alpha * PALETTE[c % len(PALETTE)]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay_grid(
    images: list[np.ndarray], truths: list[np.ndarray], preds: list[np.ndarray], gap: int = 4
) -> np.ndarray:
    """One row per example: image | ground truth overlay | prediction overlay, uint8 [R*(H+gap)-gap, 3*(W+gap)-gap, 3].

    images uint8 [H,W,3] (grey [H,W] accepted); truths/preds [H,W,C] in {0,1}. Examples of
    different sizes are padded (white) to the largest.
    """
    if not images:
        raise ValueError("overlay_grid needs at least one example")
    images = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
    height, width = max(im.shape[0] for im in images), max(im.shape[1] for im in images)
    grid = np.full((len(images) * (height + gap) - gap, 3 * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for row, (image, truth, pred) in enumerate(zip(images, truths, preds, strict=False)):
        for col, tile in enumerate((image, overlay(image, truth), overlay(image, pred))):
            y, x = row * (height + gap), col * (width + gap)
            grid[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return grid


def save_overlay_grid(grid: np.ndarray, class_names: list[str], path: str | Path, title: str | None = None) -> Path:
    """Write the grid as a PNG with column titles and a colour legend (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    height, width = grid.shape[:2]
    scale = 9.0 / width
    fig, ax = plt.subplots(figsize=(9, max(2.0, height * scale + 1.0)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([width * (2 * i + 1) / 6 for i in range(3)], ["image", "ground truth", "prediction"])
    ax.xaxis.tick_top()
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    handles = [Patch(color=PALETTE[c % len(PALETTE)] / 255, label=name) for c, name in enumerate(class_names)]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(6, len(handles)),
        fontsize=8,
        frameon=False,
    )
    return save_figure(fig, path, title)


def print_results(summary: dict, class_names: list[str]) -> None:
    """The results table printed at the end of a training run (the final epoch's ``val`` block)."""
    print()
    print(
        f"weighting: {summary['weighting']}   effective pos_weight: "
        + ", ".join(f"{q:.3g}" for q in summary["effective_pos_weight"])
        + f"   epochs: {summary['epochs_completed']} (best.pt: epoch {summary['best_epoch']})"
    )
    print(markdown_table(summary["val"], class_names))
