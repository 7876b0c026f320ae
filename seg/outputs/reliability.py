"""The reliability diagram: observed frequency against predicted probability, per channel (matplotlib, Agg).

Its input is :func:`seg.scoring.calibration.reliability_table` (the math is there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.outputs.figures import save_figure

# Legend label and line style of the known variants (an unknown name is shown as is, in the next free style).
VARIANT_LABELS = {"raw": "raw", "prior_corrected": "prior-corrected", "platt": "Platt-scaled"}
STYLES = [("tab:blue", "o"), ("tab:orange", "s"), ("tab:green", "^"), ("tab:red", "D"), ("tab:purple", "v")]


def variant_label(name: str) -> str:
    """The legend label of a curve: VARIANT_LABELS[name], or the name itself."""
    return VARIANT_LABELS.get(name, name)


def variant_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per curve name: a known variant keeps its fixed style (raw blue circles,
    prior-corrected orange squares, Platt-scaled green triangles) so that figures compare; other
    names take the styles after those in order (cycling when they run out)."""
    known = list(VARIANT_LABELS)
    styles, others = {}, 0
    for name in names:
        if name in VARIANT_LABELS:
            styles[name] = STYLES[known.index(name)]
        else:
            styles[name] = STYLES[(len(known) + others) % len(STYLES)]
            others += 1
    return styles


def plot_reliability(
    curves: dict[str, dict[str, np.ndarray]],
    class_names: list[str],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Write a reliability diagram PNG: one panel per channel, one line per entry of
    ``curves`` (e.g. {"raw": reliability_table(...), "prior_corrected": ..., "platt": ...}, labelled
    "raw", "prior-corrected", "Platt-scaled" with a fixed colour and marker each), the
    diagonal for perfect calibration, and as grey bars the share of pixels per bin of the first
    entry (log scale, right axis, topped at 2/3 of the height so the curves stay readable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(class_names))
    rows = -(-len(class_names) // columns)
    styles = variant_styles(list(curves))
    first_name, first = next(iter(curves.items()))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for c, name in enumerate(class_names):
        ax = axes[c // columns][c % columns]
        ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect")
        edges, pixels = first["edges"], first["pixels"][c]
        share = pixels / max(pixels.sum(), 1)
        bars = ax.twinx()
        bars.bar(
            edges[:-1],
            np.where(share > 0, share, np.nan),
            width=np.diff(edges),
            align="edge",
            color="0.9",
            edgecolor="0.8",
            lw=0.5,
            zorder=0,
        )
        bars.set_yscale("log")
        bars.set_ylim(1e-6, 1e3)
        bars.set_yticks([1e-6, 1e-4, 1e-2, 1])
        bars.set_ylabel(f"share of pixels ({variant_label(first_name)})", fontsize=7, color="0.5")
        bars.tick_params(labelsize=6, colors="0.5")
        ax.set_zorder(bars.get_zorder() + 1)
        ax.patch.set_visible(False)
        for variant, table in curves.items():
            colour, marker = styles[variant]
            ax.plot(
                table["confidence"][c],
                table["frequency"][c],
                color=colour,
                marker=marker,
                ms=3,
                lw=1.2,
                label=variant_label(variant),
            )
        ax.set(xlim=(0, 1), ylim=(0, 1), title=name, xlabel="predicted probability")
        if c % columns == 0:
            ax.set_ylabel("observed frequency")
        ax.legend(fontsize=7, loc="upper left")
    for extra in range(len(class_names), rows * columns):
        axes[extra // columns][extra % columns].axis("off")
    return save_figure(fig, path, title)
