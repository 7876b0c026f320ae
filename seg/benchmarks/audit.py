"""Benchmark: mask audit throughput against decoding the same files with cv2.imread alone.

Generates 512x512 single-channel PNG masks (0/255 blobs, like cell masks) in a temp folder, then times,
interleaved: cv2.imread alone (serial), the audit without object statistics (decode + per-channel counts +
value checks) serially and with 2 workers, and, for information, object statistics (connected components)
and index masks (12 values, one histogram per image) against cv2.imread of those files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from seg.audit import AuditSettings, scan_folder, tally_masks
from seg.audit.tally import AuditTally
from seg.benchmarks import timing
from seg.config.specs import MaskSpec

NAME = "audit"
TARGET = (
    "audit without object statistics on >= 1000 512x512 PNG masks: >= 0.85x the throughput of "
    "cv2.imread alone (serial), and >= 1.3x its own serial throughput with 2 workers"
)
SIZE = 512
MIN_VS_IMREAD, MIN_SPEEDUP = 0.85, 1.3
PLANS = {"full": (1000, 3), "quick": (200, 2), "tiny": (20, 1)}  # masks, timed rounds


def write_masks(folder: Path, count: int, index: bool = False, seed: int = 0) -> Path:
    """``count`` masks in ``folder/masks``: 0/255 blobs, or class indices 0..11 (11 = ignore) with ``index``."""
    rng = np.random.default_rng(seed)
    out = folder / "masks"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for _ in range(int(rng.integers(15, 60))):
            x, y = (int(v) for v in rng.integers(0, SIZE, 2))
            r = int(rng.integers(4, 40))
            value = int(rng.integers(0, 12)) if index else 255
            cv2.circle(mask, (x, y), r, value, -1)
        cv2.imwrite(str(out / f"{i:05d}.png"), mask)
    return out


def _imread_all(paths: list[Path]) -> None:
    for path in paths:
        cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def same_tally(a: AuditTally, b: AuditTally) -> bool:
    """Whether two tallies of the same masks hold the same counts."""
    return (
        a.masks_read == b.masks_read
        and np.array_equal(a.fraction_hist, b.fraction_hist)
        and np.array_equal(a.counts.positive_pixels, b.counts.positive_pixels)
        and (a.counts.valid_pixels, a.counts.all_zero_pixels) == (b.counts.valid_pixels, b.counts.all_zero_pixels)
        and a.values == b.values
        and len(a.problems) == len(b.problems)
    )


def run(size: str) -> list[str]:
    count, repeats = PLANS[size]
    with timing.threads(1), tempfile.TemporaryDirectory(prefix="seg-bench-audit-") as tmp:
        # one cv2 thread: the audit decodes with one cv2 thread per process, so compare like with like
        binary = MaskSpec("binary", ("foreground",), (255,))
        index = MaskSpec("index", tuple(f"class{k}" for k in range(11)), None, 11)
        items, _ = scan_folder(write_masks(Path(tmp) / "binary", count), Path(tmp) / "binary" / "images", binary)
        index_items, _ = scan_folder(
            write_masks(Path(tmp) / "index", count, index=True), Path(tmp) / "index" / "images", index
        )
        paths = [i.masks[0] for i in items]
        index_paths = [i.masks[0] for i in index_items]
        plain, objects = AuditSettings(binary), AuditSettings(binary, objects_from="positive")
        agree = same_tally(tally_masks(items, plain, 1, progress=False), tally_masks(items, plain, 2, progress=False))
        seconds = timing.interleave(
            {
                "imread": lambda: _imread_all(paths),
                "audit_1": lambda: tally_masks(items, plain, 1, progress=False),
                "audit_2": lambda: tally_masks(items, plain, 2, progress=False),
                "objects_1": lambda: tally_masks(items, objects, 1, progress=False),
                "index_imread": lambda: _imread_all(index_paths),
                "index_audit_1": lambda: tally_masks(index_items, AuditSettings(index), 1, progress=False),
            },
            repeats,
        )
        load = os.getloadavg()[0]
    rate = {name: spread.per_second(count) for name, spread in seconds.items()}
    median = {name: spread.median for name, spread in rate.items()}
    vs_imread = median["audit_1"] / median["imread"]
    speedup = median["audit_2"] / median["audit_1"]
    return [
        f"{count} generated {SIZE}x{SIZE} PNG masks (binary 0/255 blobs; and as many index masks, 12 values); "
        f"cv2 and torch on 1 thread per process; one warm-up round, then {repeats} timed round(s), the methods "
        "interleaved (rotated order), medians of masks/s. Agreement (the 2-worker audit counts what the serial "
        f"one counts): {'yes' if agree else 'NO'}. Load average {load:.1f} on {os.cpu_count()} CPUs at the end "
        "(other work on the machine slows the 2-worker row most).",
        "",
        *timing.HEADER,
        timing.row("cv2.imread alone, serial (binary 0/255)", rate["imread"], "masks/s", "1.00x", digits=0),
        timing.row(
            "audit, no objects, serial",
            rate["audit_1"],
            "masks/s",
            f"{vs_imread:.2f}x imread",
            f">= {MIN_VS_IMREAD}x",
            vs_imread >= MIN_VS_IMREAD,
            digits=0,
        ),
        timing.row(
            "audit, no objects, 2 workers",
            rate["audit_2"],
            "masks/s",
            f"{speedup:.2f}x serial audit",
            f">= {MIN_SPEEDUP}x",
            speedup >= MIN_SPEEDUP,
            digits=0,
        ),
        timing.row(
            "audit with object statistics, serial",
            rate["objects_1"],
            "masks/s",
            f"{median['objects_1'] / median['imread']:.2f}x imread",
            digits=0,
        ),
        timing.row("cv2.imread alone, serial (index, 12 values)", rate["index_imread"], "masks/s", "1.00x", digits=0),
        timing.row(
            "audit of index masks, serial",
            rate["index_audit_1"],
            "masks/s",
            f"{median['index_audit_1'] / median['index_imread']:.2f}x imread (index)",
            digits=0,
        ),
    ]
