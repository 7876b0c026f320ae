"""Benchmark: the U-Net border weight map, fast (per-instance crops) vs naive (full-image EDTs).

Images are deterministic 512x512 Voronoi label images of 50 cells from random seeds:
"touching" (cells share borders, no background) and "membranes" (the same cells separated by
1-2 px background lines, as in ISBI, where the border term is non-zero). Both run on one core.
Where the ISBI 2012 training masks are found (``$SEG_SHARED_DATA/isbi2012_membrane``) a row on
the first real masks (cells = 4-connected components of the non-membrane class) is added for
information; the target is judged on the generated images.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import scipy.ndimage as ndi
import torch

from seg.config import expand_path
from seg.weighting.border import border_weight_map, connected_instances, naive_border_weight_map

NAME = "border_map"
TARGET = (
    "border_map >= 20x faster than the naive per-instance full-image EDT + sort on 512x512 label "
    "images with 50 touching instances, one core, max abs diff <= 1e-5"
)
MIN_SPEEDUP = 20.0
MAX_ABS_DIFF = 1e-5
SIZE = 512
N_CELLS = 50


def voronoi_instances(seed: int, size: int = SIZE, n_cells: int = N_CELLS) -> np.ndarray:
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


def best_time(fn, repeats: int) -> tuple[float, np.ndarray]:
    """Best wall time of ``repeats`` calls, in seconds, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def compare(images: list[np.ndarray], repeats: int) -> dict:
    """Per-image best-of-``repeats`` times (ms, averaged over images) and the max abs diff."""
    border_weight_map(images[0])  # warm-up (cv2 initialisation)
    naive_ms, fast_ms, diff = [], [], 0.0
    for instances in images:
        naive_s, naive = best_time(lambda x=instances: 1.0 + naive_border_weight_map(x), repeats)
        fast_s, fast = best_time(lambda x=instances: 1.0 + border_weight_map(x), repeats)
        naive_ms.append(1e3 * naive_s)
        fast_ms.append(1e3 * fast_s)
        diff = max(diff, float(np.abs(fast - naive).max()))
    instances_per_image = np.mean([len(np.unique(image)) - int((image == 0).any()) for image in images])
    return {
        "images": len(images),
        "instances": instances_per_image,
        "naive_ms": float(np.mean(naive_ms)),
        "fast_ms": float(np.mean(fast_ms)),
        "diff": diff,
    }


def table_row(name: str, result: dict, judged: bool) -> str:
    speedup = result["naive_ms"] / result["fast_ms"]
    speed = ("PASS" if speedup >= MIN_SPEEDUP else "FAIL") if judged else "(info)"
    accuracy = ("PASS" if result["diff"] <= MAX_ABS_DIFF else "FAIL") if judged else "(info)"
    return (
        f"| {name} | {result['images']} | {result['instances']:.0f} | {result['naive_ms']:.1f} | "
        f"{result['fast_ms']:.1f} | {speedup:.1f}x | {result['diff']:.1e} | {speed} | {accuracy} |"
    )


def run(size: str) -> list[str]:
    quick = size != "full"
    """Time naive vs fast on the same images; Markdown lines with PASS/FAIL per target."""
    n_images, repeats = (2, 1) if quick else (5, 3)
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        touching = [voronoi_instances(seed) for seed in range(n_images)]
        rows = [
            table_row("touching (no background)", compare(touching, repeats), judged=True),
            table_row(
                "touching + 1-2 px membranes", compare([with_membranes(i) for i in touching], repeats), judged=True
            ),
        ]
        isbi = isbi_instances(2 if quick else 3)
        if isbi:
            rows.append(table_row("ISBI 2012 train masks (cells)", compare(isbi, 1), judged=False))
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    return [
        f"One core (torch.set_num_threads(1), cv2.setNumThreads(1); the scipy EDT and numpy run "
        f"single-threaded). {SIZE}x{SIZE} Voronoi label images of {N_CELLS} cells, w_c = 1, w0 = 10, "
        f"sigma = 5, eps = 1e-7; per-image time = best of {repeats} (1 for ISBI), averaged over the "
        "images. ISBI rows are for information; the target is judged on the generated images.",
        "",
        "| label images | count | instances/image | naive ms/image | fast ms/image | speed-up | max abs diff | "
        f">= {MIN_SPEEDUP:.0f}x | <= {MAX_ABS_DIFF:.0e} |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
