"""A deterministic synthetic dataset, generated on first use (no download needed).

Multi-label masks with three channels of very different frequency:

- ``cell``: touching cells (about 35% of pixels), with 16-bit instance labels;
- ``nucleus``: one small disk inside each cell (a few %), overlapping ``cell``;
- ``speck``: rare bright dots in some images (well under 1%), anywhere.

Layout written: ``root/images/*.png``, ``root/masks/<channel>/*.png`` (0/255),
``root/instances/*.png`` (uint16, 0 = background). Image sides are deliberately
not multiples of 32, so that validation padding is exercised.

``data.synthetic: true`` generates only into the default folder ``data/synthetic`` (the default
``data.root``, relative to the working directory) or into an existing empty folder; a folder with the
marker file ``.complete`` (written last) holds a complete set and is used as it is.
Anything else is refused (``ensure_synthetic``): a mistyped ``data.root`` would otherwise
receive a generated set, and a folder of someone's files is never overwritten.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from seg.errors import DataError

CLASSES = ("cell", "nucleus", "speck")
MARKER = ".complete"
DEFAULT_ROOT = Path("data") / "synthetic"  # the default data.root: relative to the working directory


def _draw_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: RGB uint8 [H,W,3], masks uint8 [H,W,3] in {0,1}, instances uint16 [H,W]."""
    yy, xx = np.mgrid[0:size, 0:size]
    n_cells = int(rng.integers(6, 12))
    centres = rng.uniform(size * 0.12, size * 0.88, size=(n_cells, 2))
    radii = rng.uniform(size * 0.08, size * 0.15, size=n_cells)
    dist = np.sqrt((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2)
    inside = dist <= radii[:, None, None]
    nearest = np.argmin(np.where(inside, dist, np.inf), axis=0)
    ids = rng.permutation(np.arange(1, 4 * n_cells))[:n_cells]  # non-consecutive instance ids
    instances = np.where(inside.any(axis=0), ids[nearest], 0).astype(np.uint16)
    cell = instances > 0
    nucleus = (dist <= (radii * 0.3)[:, None, None]).any(axis=0)
    speck = np.zeros((size, size), dtype=bool)
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 6))):
            cy, cx = rng.integers(3, size - 3, size=2)
            speck |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(1.5, 3.5) ** 2
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = (40, 50, 70)
    image[cell] = (150, 110, 120)
    boundaries = cv2.morphologyEx(instances, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    image[boundaries & cell] = (90, 70, 80)
    image[nucleus] = (70, 40, 140)
    image[speck] = (250, 240, 90)
    image += rng.normal(0, 18, size=image.shape)
    blurred = cv2.GaussianBlur(image, (3, 3), 0)
    masks = np.stack([cell, nucleus, speck], axis=-1).astype(np.uint8)
    return np.clip(blurred, 0, 255).astype(np.uint8), masks, instances


def generate(root: Path, count: int = 48, size: int = 144, seed: int = 0) -> Path:
    """Write the dataset under ``root`` (atomically: into a temporary folder, then renamed)."""
    root = Path(root)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ["images", "instances"] + [f"masks/{c}" for c in CLASSES]:
        (tmp / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image, masks, instances = _draw_sample(rng, size)
        stem = f"synth_{index:03d}"
        cv2.imwrite(str(tmp / "images" / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(tmp / "instances" / f"{stem}.png"), instances)
        for c, name in enumerate(CLASSES):
            cv2.imwrite(str(tmp / "masks" / name / f"{stem}.png"), masks[..., c] * 255)
    (tmp / MARKER).write_text(f"count={count} size={size} seed={seed}\n")
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def is_default_root(root: Path) -> bool:
    """Whether ``root`` is the default synthetic folder ``data/synthetic`` of the working directory."""
    try:
        return Path(root).resolve() == DEFAULT_ROOT.resolve()
    except OSError:
        return False


def ensure_synthetic(root: Path) -> Path:
    """Use the complete synthetic set in ``root``, or generate one there where that is safe.

    A complete set (the marker file) is used as it is; the default folder ``data/synthetic``
    is generated when missing; an existing empty folder is generated into. Anything else
    raises DataError naming the path: a missing path other than the default (probably a
    typo in data.root) or a folder that holds files but no complete set.
    """
    root = Path(root)
    if (root / MARKER).is_file():
        return root
    rule = "data.synthetic generates only into data/synthetic or an existing empty folder"
    if not root.exists():
        if not is_default_root(root):
            raise DataError(f"data.root {root}: not found; {rule}: create it (mkdir) or fix the path")
    elif not root.is_dir():
        raise DataError(f"data.root {root}: not a folder; {rule}: fix the path")
    elif any(root.iterdir()):
        raise DataError(
            f"data.root {root}: holds files but no complete synthetic set (no {MARKER} file); {rule}: "
            "fix the path, empty the folder, or set data.synthetic: false to train on its files"
        )
    generate(root)
    return root
