"""Overlays for people to look at: masks blended over images in a colour per channel, and grids of examples.

Pure numpy on uint8 arrays, except :func:`save_overlay_grid`, which writes a PNG (matplotlib, Agg).
"""

from __future__ import annotations

import colorsys
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


def palette(count: int) -> np.ndarray:
    """``count`` distinct colours uint8 [count, 3]: tab10 (PALETTE) first, then, one at a time, the colour of
    a hue x saturation x brightness grid farthest (RGB distance) from those already taken, so that each new
    class stands apart from the others; beyond the grid's 540 colours, further hues in golden-ratio steps."""
    colours = [tuple(int(v) for v in c) for c in PALETTE][:count]
    if len(colours) < count:
        grid = np.array(
            [
                colorsys.hsv_to_rgb(h / 60, s, v)
                for h in range(60)
                for s in (0.45, 0.7, 0.95)
                for v in (0.55, 0.75, 0.95)
            ]
        )
        grid = np.rint(255 * grid)
        nearest = np.min(np.linalg.norm(grid[:, None] - np.array(colours, float)[None], axis=2), axis=1)
        while len(colours) < count and nearest.max() > 0:
            pick = grid[int(nearest.argmax())]
            colours.append(tuple(int(v) for v in pick))
            nearest = np.minimum(nearest, np.linalg.norm(grid - pick, axis=1))
    index = 0
    while len(colours) < count:
        value = 0.95 if index % 2 == 0 else 0.65
        rgb = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, value)
        colour = tuple(int(v) for v in np.rint(255 * np.array(rgb)))
        if colour not in colours:
            colours.append(colour)
        index += 1
    return np.array(colours, dtype=np.uint8)


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """image uint8 [H,W,3]; masks [H,W,C] in {0,1}: channel c blended in palette(C)[c] (in channel
    order, so later channels lie on top where labels overlap). Returns uint8 [H,W,3]."""
    out = image.astype(np.float32)
    colours = palette(masks.shape[-1])
    for c in range(masks.shape[-1]):
        on = masks[..., c] > 0
        out[on] = (1 - alpha) * out[on] + alpha * colours[c]
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
    colours = palette(len(class_names))
    handles = [Patch(color=colours[c] / 255, label=name) for c, name in enumerate(class_names)]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(6, len(handles)),
        fontsize=8,
        frameon=False,
    )
    return save_figure(fig, path, title)
