"""Benchmark: the U-Net border term, fast vs the naive reference vs two full-image EDTs, on one core.

Label images: deterministic Voronoi cells from random seeds, separated by 1-2 px background lines
(membranes, as in ISBI, where the border term is non-zero), 50 and 80 cells per image. Per image,
three methods run interleaved (:func:`seg.benchmarks.timing.interleave`): the naive reference
(one full-image scipy EDT per instance, stacked and sorted), ``border_weight_map``, and the
"two-EDT floor": two cv2.distanceTransform passes (exact L2) over the image's background mask,
the transform that gives d1. Where the ISBI 2012 training masks are found
(``$SEG_SHARED_DATA/isbi2012_membrane``) the same rows on their cells (4-connected components of
the non-membrane class) are added for information.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.ndimage as ndi

from seg.benchmarks.timing import HEADER, SIZES, Spread, interleave, row, threads, verdict
from seg.config import expand_path
from seg.weighting.border import border_weight_map, connected_instances, naive_border_weight_map

NAME = "border_map"
TARGET = (
    "border_weight_map on 512x512 Voronoi label images with 1-2 px membranes, one core: >= 35x faster than the "
    "naive per-instance full-image EDT + sort at 50 instances and >= 50x at 80, <= 2x the two-EDT floor at 50, "
    "max abs diff to the naive <= 1e-5 on every image"
)
MIN_SPEEDUP = (35.0, 50.0)  # for the first and the second instance count of a plan
MAX_FLOOR_RATIO = 2.0  # judged at the first instance count
MAX_ABS_DIFF = 1e-5


@dataclass(frozen=True)
class Plan:
    """What one size measures: ``images`` label images per instance count, each timed ``repeats`` rounds."""

    side: int  # label images are side x side
    counts: tuple[int, int]  # instances per image; targets MIN_SPEEDUP, in order
    images: int
    repeats: int
    isbi: int  # ISBI masks for the information rows (0: none)


PLANS = {
    "full": Plan(side=512, counts=(50, 80), images=6, repeats=3, isbi=3),
    "quick": Plan(side=512, counts=(50, 80), images=2, repeats=2, isbi=1),
    "tiny": Plan(side=128, counts=(8, 12), images=1, repeats=1, isbi=0),
}


def voronoi_instances(seed: int, size: int = 512, n_cells: int = 50) -> np.ndarray:
    """int32 [size,size] Voronoi labels 1..n_cells around random seed pixels (cells touch)."""
    rng = np.random.default_rng(seed)
    seeds = rng.choice(size * size, n_cells, replace=False)
    not_seed = np.ones(size * size, bool)
    not_seed[seeds] = False
    _, (rows, cols) = ndi.distance_transform_edt(not_seed.reshape(size, size), return_indices=True)
    labels = np.zeros(size * size, np.int32)
    labels[seeds] = np.arange(1, n_cells + 1)
    return labels.reshape(size, size)[rows, cols]


def with_membranes(instances: np.ndarray) -> np.ndarray:
    """Set to 0 every pixel with a 4-neighbour of another label: 1-2 px background lines."""
    edge = np.zeros(instances.shape, bool)
    vertical = instances[:-1] != instances[1:]
    horizontal = instances[:, :-1] != instances[:, 1:]
    edge[:-1] |= vertical
    edge[1:] |= vertical
    edge[:, :-1] |= horizontal
    return np.where(edge, 0, instances).astype(instances.dtype)


def isbi_instances(count: int) -> list[np.ndarray]:
    """Cells of the first ``count`` ISBI training masks, or [] when the data is absent."""
    root = expand_path("${SEG_SHARED_DATA}")  # default ../shared/data, from the working directory
    masks = sorted((root / "isbi2012_membrane" / "train" / "masks").glob("*.png"))[:count]
    return [
        connected_instances(np.asarray(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)) > 127, connectivity=4)
        for path in masks
    ]


def _methods(instances: np.ndarray, results: dict[str, np.ndarray]) -> dict[str, Callable[[], object]]:
    """The three timed calls on one label image; the maps land in ``results``."""
    background = (instances == 0).astype(np.uint8)

    def naive() -> None:
        results["naive"] = naive_border_weight_map(instances)

    def fast() -> None:
        results["fast"] = border_weight_map(instances)

    def floor() -> None:
        for _ in range(2):
            cv2.distanceTransform(background, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)

    return {"naive": naive, "fast": fast, "floor": floor}


def measure(images: list[np.ndarray], repeats: int) -> tuple[dict[str, Spread], list[float]]:
    """Milliseconds per image of each method over all images x rounds, and each image's max abs diff."""
    milliseconds: dict[str, list[float]] = {"naive": [], "fast": [], "floor": []}
    diffs = []
    for instances in images:
        results: dict[str, np.ndarray] = {}
        for name, spread in interleave(_methods(instances, results), repeats).items():
            milliseconds[name] += spread.scaled(1e3).values
        diffs.append(float(np.abs(results["fast"] - results["naive"]).max()))
    return {name: Spread.of(values) for name, values in milliseconds.items()}, diffs


def _rows(label: str, times: dict[str, Spread], min_speedup: float | None, judge_floor: bool) -> list[str]:
    """The four rows of one image set: naive, floor, fast vs naive, fast vs floor (targets None: information)."""
    naive, fast, floor = times["naive"], times["fast"], times["floor"]
    speedup = naive.median / fast.median
    over_floor = fast.median / floor.median
    return [
        row(f"naive (per-instance full-image EDT + sort), {label}", naive, "ms"),
        row(f"two-EDT floor, {label}", floor, "ms", digits=2),
        row(
            f"border_weight_map, {label}",
            fast,
            "ms",
            f"{speedup:.1f}x faster than naive",
            "" if min_speedup is None else f">= {min_speedup:.0f}x",
            None if min_speedup is None else speedup >= min_speedup,
            digits=2,
        ),
        row(
            f"border_weight_map vs two-EDT floor, {label}",
            fast,
            "ms",
            f"{over_floor:.2f}x floor",
            f"<= {MAX_FLOOR_RATIO:.0f}x" if judge_floor else "",
            over_floor <= MAX_FLOOR_RATIO if judge_floor else None,
            digits=2,
        ),
    ]


def run(size: str) -> list[str]:
    """Time the three methods side by side; Markdown lines: the method, then one table (timing.HEADER)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    plan = PLANS[size]
    rows: list[str] = []
    diffs: list[float] = []
    with threads(1):
        for count, min_speedup in zip(plan.counts, MIN_SPEEDUP, strict=True):
            images = [with_membranes(voronoi_instances(seed, plan.side, count)) for seed in range(plan.images)]
            times, image_diffs = measure(images, plan.repeats)
            diffs += image_diffs
            rows += _rows(f"{count} instances", times, min_speedup, judge_floor=count == plan.counts[0])
        isbi = isbi_instances(plan.isbi) if plan.isbi else []
        if isbi:
            times, image_diffs = measure(isbi, plan.repeats)
            diffs += image_diffs
            cells = np.mean([len(np.unique(cells)) - 1 for cells in isbi])
            rows += _rows(f"ISBI cells ({cells:.0f} per mask)", times, None, judge_floor=False)
    worst = max(diffs)
    rows.append(
        f"| max abs diff vs naive, each of the {len(diffs)} images | {worst:.1e} | {min(diffs):.1e} .. {worst:.1e} "
        f"|  | <= {MAX_ABS_DIFF:.0e} | {verdict(worst <= MAX_ABS_DIFF)} |"
    )
    isbi_note = (
        f" ISBI rows, for information: the cells of the first {len(isbi)} of the sorted training masks."
        if isbi
        else " No ISBI rows (none at this size, or the data is absent)."
    )
    return [
        f"One core (torch.set_num_threads(1), cv2.setNumThreads(1)). Per instance count, {plan.images} "
        f"{plan.side}x{plan.side} Voronoi label images with 1-2 px membranes "
        f"(with_membranes(voronoi_instances(seed, n_cells)), seeds 0..{plan.images - 1}).{isbi_note} "
        f"w0 = 10, sigma = 5, eps = 1e-7. Per image, naive, border_weight_map and the two-EDT floor (two "
        "cv2.distanceTransform(background, DIST_L2, DIST_MASK_PRECISE) over the full image) run interleaved: "
        f"one warm-up round, then {plan.repeats} timed round(s) in rotated order. Median and spread over "
        "images x rounds, in ms per image; ratios are ratios of medians. Max abs diff on every image. "
        f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.",
        "",
        *HEADER,
        *rows,
    ]
