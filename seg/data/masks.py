"""Decode image and mask files into arrays, per mask format, checking every value.

Formats (``data.mask_format``):

- ``binary``: one single-channel PNG per image, values 0/1 or 0/255;
  ``positive_values`` selects the positive class (ISBI: ``[0]``, the membrane).
- ``index``: one PNG of class indices 0..C-1, ``ignore_index`` marks unlabelled pixels;
  turned into a one-hot target with the ignore pixels removed.
- ``multilabel``: channels that may overlap: one PNG per channel in ``masks/<channel>/``,
  or one multi-channel PNG in ``masks/`` (channel order R, G, B, A).
- ``instance``: a binary mask as for ``binary`` plus 16-bit instance labels in
  ``instances/`` (0 = background), used by the border weight map.

Every decoder returns ``target`` uint8 [H,W,C] in {0,1} and ``valid`` bool [H,W].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

BINARY_VALUES = (0, 1, 255)


class DataError(ValueError):
    """Bad input data; the message names the file and the offending value."""


@dataclass(frozen=True)
class MaskSpec:
    """What the masks of a dataset are declared to contain."""

    fmt: str
    classes: tuple[str, ...]
    positive_values: tuple[int, ...] | None = None
    ignore_index: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_image(path: Path) -> np.ndarray:
    """Read an image as RGB uint8 [H,W,3] (grayscale is repeated to 3 channels)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot read the image (missing, corrupt or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_raw(path: Path) -> np.ndarray:
    """Read a mask file unchanged (any bit depth, channels in RGB(A) order)."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"{path}: cannot read the mask (missing, corrupt or not an image file)")
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB if raw.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return raw


def _unexpected(raw: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Values of ``raw`` not in ``allowed`` (one bincount: fast on uint8/uint16)."""
    if raw.dtype not in (np.uint8, np.uint16):
        values = np.unique(raw)
        return values[~np.isin(values, allowed)]
    counts = np.bincount(raw.ravel(), minlength=int(allowed.max()) + 1)
    present = np.flatnonzero(counts)
    return present[~np.isin(present, allowed)]


def _check_values(raw: np.ndarray, allowed: tuple[int, ...], path: Path, what: str) -> None:
    bad = _unexpected(raw, np.asarray(allowed))
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if bad.size > 5 else "")
        raise DataError(f"{path}: mask value {shown} is not valid for {what} (allowed: {list(allowed)})"
                        + ("; the mask was probably resized with interpolation: use nearest-neighbour"
                           if what.startswith("a binary") else ""))


def _single_channel(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.ndim == 3:
        raise DataError(f"{path}: mask has {raw.shape[2]} channels but a single-channel mask is expected "
                        "(a binary mask stored as RGB: save it as grayscale)")
    return raw


def decode_binary(raw: np.ndarray, spec: MaskSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _single_channel(raw, path)
    _check_values(raw, tuple(sorted(set(BINARY_VALUES) | set(spec.positive_values or ()))), path,
                  "a binary mask")
    target = np.isin(raw, spec.positive_values).astype(np.uint8)[..., None]
    return target, np.ones(raw.shape, dtype=bool)


def decode_index(raw: np.ndarray, spec: MaskSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _single_channel(raw, path)
    allowed = tuple(range(spec.num_classes)) + ((spec.ignore_index,) if spec.ignore_index is not None else ())
    _check_values(raw, allowed, path, f"an index mask with {spec.num_classes} classes"
                  + (f" and ignore_index {spec.ignore_index}" if spec.ignore_index is not None else ""))
    target = (raw[..., None] == np.arange(spec.num_classes, dtype=raw.dtype)).astype(np.uint8)
    valid = raw != spec.ignore_index if spec.ignore_index is not None else np.ones(raw.shape, dtype=bool)
    return target, valid


def decode_multilabel(raws: list[np.ndarray], spec: MaskSpec, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """One raw per channel, or one raw with C channels."""
    if len(raws) == 1 and spec.num_classes > 1:
        raw, path = raws[0], paths[0]
        if raw.ndim != 3 or raw.shape[2] < spec.num_classes:
            got = 1 if raw.ndim == 2 else raw.shape[2]
            raise DataError(f"{path}: multilabel mask has {got} channel(s); data.classes lists {spec.num_classes}")
        raws, paths = [raw[..., c] for c in range(spec.num_classes)], [path] * spec.num_classes
    channels = []
    for raw, path in zip(raws, paths):
        raw = _single_channel(raw, path)
        _check_values(raw, BINARY_VALUES, path, "a multilabel channel")
        channels.append(raw > 0)
    shapes = {c.shape for c in channels}
    if len(shapes) > 1:
        raise DataError(f"{paths[0]}: the channel masks of this image differ in size: {sorted(shapes)}")
    target = np.stack(channels, axis=-1).astype(np.uint8)
    return target, np.ones(target.shape[:2], dtype=bool)


def decode_instances(raw: np.ndarray, path: Path) -> np.ndarray:
    """16-bit (or 8-bit) instance labels -> int32 [H,W], 0 = background."""
    raw = _single_channel(raw, path)
    if raw.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: instance labels must be 8- or 16-bit PNG, got {raw.dtype}")
    return raw.astype(np.int32)


def load_mask(mask_paths: tuple[Path, ...], spec: MaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read and decode the mask file(s) of one image: target [H,W,C] uint8, valid [H,W] bool."""
    raws = [read_raw(p) for p in mask_paths]
    if spec.fmt == "multilabel":
        return decode_multilabel(raws, spec, list(mask_paths))
    if spec.fmt == "index":
        return decode_index(raws[0], spec, mask_paths[0])
    return decode_binary(raws[0], spec, mask_paths[0])
