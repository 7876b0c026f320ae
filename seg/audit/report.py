"""The audit's plots and report.md, from the content of mask_stats.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.audit.summary import _fraction
from seg.outputs.tables import markdown_table

MAX_REPORT_PROBLEMS = 200


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def plot_positive_fraction(stats: dict, path: Path) -> None:
    """Horizontal bars, log scale: the positive fraction of each channel over the dataset."""
    names = [c["name"] for c in stats["channels"]]
    fractions = [c["positive_fraction"] or 0.0 for c in stats["channels"]]
    fig = _figure(7.0, 1.2 + 0.35 * len(names))
    ax = fig.subplots()
    shown = [f if f > 0 else np.nan for f in fractions]
    bars = ax.barh(range(len(names)), shown, color="tab:blue")
    ax.set_xscale("log")
    positive = [f for f in fractions if f > 0]
    ax.set_xlim(min(positive + [1e-3]) / 3, 3.0)
    for bar, f in zip(bars, fractions, strict=False):
        y = bar.get_y() + bar.get_height() / 2
        label = _pct(f) if f > 0 else "never positive"
        ax.text(
            f * 1.08 if f > 0 else ax.get_xlim()[0] * 1.1,
            y,
            label,
            va="center",
            fontsize=8,
            color="black" if f > 0 else "tab:red",
        )
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("positive pixels / valid pixels (log scale)")
    ax.set_title(
        f"{stats['dataset']} ({stats['split']} split, {stats['images']} masks): positive fraction per channel",
        fontsize=10,
    )
    ax.grid(axis="x", which="major", alpha=0.3)
    fig.savefig(path)


def plot_image_fractions(stats: dict, path: Path) -> None:
    """Per channel, how many images have which positive fraction (log bins, plus the empty images)."""
    edges = np.asarray(stats["image_fraction_bin_edges"])
    channels = stats["channels"]
    cols = min(3, len(channels))
    rows = -(-len(channels) // cols)
    fig = _figure(max(6.5, 3.6 * cols), 2.3 * rows + 0.8)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, squeeze=False)).ravel()
    for ax, channel in zip(axes, channels, strict=False):
        hist = channel["image_fraction_histogram"]
        ax.bar(
            np.log10(edges[:-1]),
            hist["counts"],
            width=np.diff(np.log10(edges)),
            align="edge",
            color="tab:blue",
            edgecolor="white",
            linewidth=0.5,
        )
        empty_x = np.log10(edges[0]) - 0.75
        ax.bar(empty_x, hist["empty"], width=0.5, color="tab:gray")
        ax.set_title(f"{channel['name']} ({hist['empty']} empty)", fontsize=9)
        ticks = np.arange(np.log10(edges[0]), 0.01, 1.0)
        ax.set_xticks([empty_x] + list(ticks), ["0"] + [f"1e{int(t)}" if t else "1" for t in ticks], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(channels) :]:
        ax.set_visible(False)
    fig.supxlabel("fraction of the image that is positive (log bins); gray: images with none", fontsize=9)
    fig.supylabel("images", fontsize=9)
    fig.suptitle(
        f"{stats['dataset']} ({stats['split']} split, {stats['images']} masks): per-image positive fraction",
        fontsize=10,
    )
    fig.savefig(path)


def plot_object_sizes(stats: dict, path: Path) -> None:
    """Object sizes (log2 bins) and objects per image, one row per channel with objects."""
    channels = [c for c in stats["objects"]["channels"] if c["objects"]]
    fig = _figure(9.0, 2.1 * len(channels) + 0.8)
    axes = fig.subplots(len(channels), 2, squeeze=False)
    for row, ((left, right), channel) in enumerate(zip(axes, channels, strict=False)):
        sizes = channel["object_size_histogram"]
        left.bar(range(len(sizes["counts"])), sizes["counts"], color="tab:green", edgecolor="white")
        step = max(1, -(-len(sizes["counts"]) // 12))
        left.set_xticks(
            range(0, len(sizes["counts"]), step), [_compact(e) for e in sizes["bin_lower_edges"][::step]], fontsize=7
        )
        left.set_title(f"{channel['name']}: {channel['objects']} objects", fontsize=9)
        if row == len(channels) - 1:
            left.set_xlabel("object size in pixels (log2 bins, lower edge)", fontsize=8)
            right.set_xlabel("objects in the image (log2 bins, lower edge)", fontsize=8)
        left.set_ylabel("objects", fontsize=8)
        per_image = channel["objects_per_image_histogram"]
        right.bar(range(len(per_image["counts"])), per_image["counts"], color="tab:purple", edgecolor="white")
        right.set_xticks(
            range(len(per_image["counts"])), [_compact(e) for e in per_image["bin_lower_edges"]], fontsize=7
        )
        right.set_title(
            f"objects per image: mean {channel['objects_per_image_mean']:.3g}, max {channel['objects_per_image_max']}",
            fontsize=9,
        )
        right.set_ylabel("images", fontsize=8)
    source = stats["objects"]["source"]
    found = "instance labels" if source == "instance" else f"connected components of the {source} class"
    fig.suptitle(
        f"{stats['dataset']}: objects ({found}, {stats['objects']['connectivity']}-connectivity)",
        fontsize=10,
    )
    fig.savefig(path)


def _compact(n: int) -> str:
    return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}k" if n >= 1 << 10 else str(n)


def write_plots(stats: dict, folder: Path) -> list[str]:
    """Write the plots into ``folder``; return their file names."""
    plots = [("positive_fraction.png", plot_positive_fraction), ("image_positive_fraction.png", plot_image_fractions)]
    if stats["objects"] and any(c["objects"] for c in stats["objects"]["channels"]):
        plots.append(("object_sizes.png", plot_object_sizes))
    for name, plot in plots:
        plot(stats, folder / name)
    return [name for name, _ in plots]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.4g}%"


def _relative(file: str, base: Path) -> str:
    try:
        return str(Path(file).relative_to(base)) or "."
    except ValueError:
        return file


def render_report(stats: dict, plots: list[str]) -> str:
    """report.md: the same numbers as mask_stats.json, for people."""
    fmt, px = stats["format"], stats["pixels"]
    source = ", ".join(f"{k} `{v}`" for k, v in stats["source"].items())
    detail = {
        "binary": f"positive_values {fmt['positive_values']}",
        "index": f"ignore_index {fmt['ignore_index']}",
    }.get(fmt["mask_format"], "")
    lines = [
        f"# Mask audit: {stats['dataset']} ({stats['split']} split)",
        "",
        f"Source: {source}. Format: {fmt['mask_format']}, {len(fmt['classes'])} channel(s)"
        + (f", {detail}." if detail else "."),
        "",
        f"- Masks counted: {stats['images']} of {stats['masks_found']} found"
        + (
            f" ({stats['masks_not_counted']} unreadable or malformed, see problems)"
            if stats["masks_not_counted"]
            else ""
        ),
        f"- Pixels: {px['total']:,} in all, {px['valid']:,} valid, {px['ignored']:,} ignored "
        f"({_pct(_fraction(px['ignored'], px['total']))})",
        f"- All-zero pixels (no channel positive): {px['all_zero']:,} ({_pct(px['all_zero_fraction'])} of valid)",
        "- Image sizes (W x H): "
        + ", ".join(f"{s['width']}x{s['height']} ({s['masks']})" for s in stats["image_sizes"]),
        "- Mask dtypes: " + ", ".join(f"{k} ({v})" for k, v in stats["mask_dtypes"].items()),
        "- Mask values: "
        + ", ".join(str(v["value"]) for v in stats["mask_values"][:40])
        + (" ..." if len(stats["mask_values"]) > 40 else ""),
        "",
    ]
    lines += notes if (notes := [f"> {n}" for n in stats["notes"]] + ([""] if stats["notes"] else [])) else []
    both = fmt["mask_format"] == "multilabel"  # elsewhere all_zero is refused by training: JSON only
    lines += ["## Channels", ""] + markdown_table(
        [
            "channel",
            "positive",
            "positive pixels",
            "valid pixels",
            "images with positives",
            "empty images",
            "pos_weight (pixels)",
        ]
        + ["pos_weight (all_zero)"] * both,
        [
            [
                c["name"],
                _pct(c["positive_fraction"]),
                f"{c['positive_pixels']:,}",
                f"{c['total_pixels']:,}",
                c["images_with_positives"],
                c["empty_images"],
                c["pos_weight"]["pixels"],
            ]
            + [c["pos_weight"]["all_zero"]] * both
            for c in stats["channels"]
        ],
    )
    g = stats["global_pos_weight"]
    lines += [
        "",
        f"Global pos_weight (all channels pooled): {g['pixels']} (pixels)"
        + (f", {g['all_zero']} (all_zero)" if both else "")
        + ". "
        f"Weights are neg/pos clamped to {stats['clamp']}; a channel without positives takes the maximum. "
        "Positive fractions are of the valid (not ignored) pixels. `pixels`: negatives of channel c are the "
        "valid pixels where c is 0; `all_zero`: the pixels where no channel is positive."
        + (f" Note: {stats['negatives_note']}; see mask_stats.json." if stats["negatives_note"] else ""),
        "",
        "Training reads these counts with `loss.stats_file: <this folder>/mask_stats.json`.",
        "",
    ]
    lines += [f"![{name}]({name})" for name in plots if name != "object_sizes.png"] + [""]
    if stats["objects"]:
        obj = stats["objects"]
        lines += (
            [
                "## Objects",
                "",
                f"Source: {obj['source']}, {obj['connectivity']}-connectivity, {obj['images']} images.",
                "",
            ]
            + markdown_table(
                [
                    "channel",
                    "objects",
                    "per image (mean)",
                    "per image (max)",
                    "images without objects",
                    "largest object (px)",
                    "images with touching objects",
                ],
                [
                    [
                        c["name"],
                        c["objects"],
                        c["objects_per_image_mean"],
                        c["objects_per_image_max"],
                        c["images_without_objects"],
                        c["object_size_max"],
                        "n/a" if c["images_with_touching_objects"] is None else c["images_with_touching_objects"],
                    ]
                    for c in obj["channels"]
                ],
            )
            + [""]
        )
        lines += ["![object_sizes.png](object_sizes.png)", ""] if "object_sizes.png" in plots else []
    problems = stats["problems"]
    lines += [f"## Problems ({len(problems)})", ""]
    if not problems:
        return "\n".join(lines + ["None found.", ""])
    lines += markdown_table(["kind", "count"], [[k, n] for k, n in stats["problem_counts"].items()]) + [""]
    base = Path(stats["source"].get("root") or Path(stats["source"]["masks"]).parent)
    lines += [f"Files relative to `{base}`; mask_stats.json has full paths.", ""]
    lines += markdown_table(
        ["file", "kind", "detail"],
        [
            [f"`{_relative(p['file'], base)}`", p["kind"], p["detail"].replace("|", "/")]
            for p in problems[:MAX_REPORT_PROBLEMS]
        ],
    )
    if len(problems) > MAX_REPORT_PROBLEMS:
        lines += ["", f"... and {len(problems) - MAX_REPORT_PROBLEMS} more in mask_stats.json."]
    return "\n".join(lines + [""])
