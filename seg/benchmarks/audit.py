"""Benchmark: mask audit throughput against decoding the same files with cv2.imread alone.

Generates 512x512 single-channel PNG masks (0/255 blobs, like cell masks) in a temp
folder, then times side by side, best of a few rounds: cv2.imread alone (serial), the
audit without object statistics (decode + per-channel counts + value checks) serially
and with 2 workers, and, for information, object statistics (connected components)
and index masks (12 values, one histogram per image).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from seg.audit import AuditSettings, scan_folder, tally_masks
from seg.config.specs import MaskSpec

NAME = "audit"
TARGET = (
    "audit without object statistics on >= 1000 512x512 PNG masks: >= 0.85x the throughput of "
    "cv2.imread alone (serial), and >= 1.3x its own serial throughput with 2 workers"
)
SIZE = 512


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


def _rate(fn, count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def _imread_all(paths: list[Path]) -> None:
    for path in paths:
        cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def run(size: str) -> list[str]:
    quick = size != "full"
    count, rounds = (200, 2) if quick else (1000, 3)
    with tempfile.TemporaryDirectory(prefix="seg-bench-audit-") as tmp:
        binary = MaskSpec("binary", ("foreground",), (255,))
        index = MaskSpec("index", tuple(f"class{k}" for k in range(11)), None, 11)
        items, _ = scan_folder(write_masks(Path(tmp) / "binary", count), Path(tmp) / "binary" / "images", binary)
        index_items, _ = scan_folder(
            write_masks(Path(tmp) / "index", count, index=True), Path(tmp) / "index" / "images", index
        )
        paths = [i.masks[0] for i in items]
        index_paths = [i.masks[0] for i in index_items]
        plain, objects = AuditSettings(binary), AuditSettings(binary, objects_from="positive")
        cv2.setNumThreads(1)  # the audit decodes with one cv2 thread per process: compare like with like
        rates: dict[str, float] = {}
        for _ in range(rounds):  # interleaved rounds: a load change on a shared machine hits every row alike
            for name, fn in (
                ("imread", lambda: _imread_all(paths)),
                ("audit_1", lambda: tally_masks(items, plain, 1, progress=False)),
                ("audit_2", lambda: tally_masks(items, plain, 2, progress=False)),
                ("objects_1", lambda: tally_masks(items, objects, 1, progress=False)),
                ("index_imread", lambda: _imread_all(index_paths)),
                ("index_audit_1", lambda: tally_masks(index_items, AuditSettings(index), 1, progress=False)),
            ):
                rates[name] = max(rates.get(name, 0.0), _rate(fn, count))
        load = os.getloadavg()[0]
    vs_imread = rates["audit_1"] / rates["imread"]
    speedup = rates["audit_2"] / rates["audit_1"]
    verdict = "PASS" if vs_imread >= 0.85 and speedup >= 1.3 else "FAIL"
    lines = [
        f"{count} generated {SIZE}x{SIZE} PNG masks, best of {rounds} interleaved rounds; load average "
        f"{load:.1f} on {os.cpu_count()} CPUs at the end (other work on the machine slows the 2-worker row most).",
        "",
        "| measurement | masks/s | ratio | target |",
        "|---|---|---|---|",
        f"| cv2.imread alone, serial (binary 0/255) | {rates['imread']:.0f} | 1.00 | |",
        f"| audit, no objects, serial | {rates['audit_1']:.0f} | {vs_imread:.2f} x imread | >= 0.85 |",
        f"| audit, no objects, 2 workers | {rates['audit_2']:.0f} | {speedup:.2f} x serial audit | >= 1.3 |",
        f"| audit with object statistics, serial | {rates['objects_1']:.0f} | "
        f"{rates['objects_1'] / rates['imread']:.2f} x imread | (timed separately) |",
        f"| cv2.imread alone, serial (index, 12 values) | {rates['index_imread']:.0f} | 1.00 | |",
        f"| audit of index masks, serial | {rates['index_audit_1']:.0f} | "
        f"{rates['index_audit_1'] / rates['index_imread']:.2f} x imread | (information) |",
        "",
        f"{verdict}: audit {vs_imread:.2f}x imread (target >= 0.85), 2 workers {speedup:.2f}x serial (target >= 1.3).",
    ]
    return lines
