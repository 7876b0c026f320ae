"""Decode image and mask files into arrays, per mask format, checking every value.

Formats (``data.mask_format``):

- ``binary``: one single-channel PNG per image, values 0/1 or 0/255;
  ``positive_values`` selects the positive class (ISBI: ``[0]``, the membrane).
- ``index``: one PNG of class indices 0..C-1, ``ignore_index`` marks unlabelled pixels;
  turned into a one-hot target with the ignore pixels removed.
- ``multilabel``: channels that may overlap: one PNG per channel in ``masks/<channel>/``,
  or one multi-channel PNG in ``masks/`` (channel order R, G, B, A; grey+alpha: grey, alpha).
- ``instance``: a binary mask as for ``binary`` plus 16-bit instance labels in
  ``instances/`` (0 = background), used by the border weight map.

Every decoder returns ``target`` uint8 [H,W,C] in {0,1} and ``valid`` bool [H,W].

PNG colour types that OpenCV alone would misread (``read_raw`` looks at the IHDR header):

- grey+alpha (colour type 4) decodes as 2 channels, grey then alpha (OpenCV alone
  expands it to 4 channels with the grey copied three times). A multilabel mask with
  2 classes takes channel 0 from the grey and channel 1 from the alpha; a binary or
  index mask must be single-channel and is refused.
- palette (colour type 3): ``index`` masks and instance labels decode as the palette
  indices (the class, not the colour). Other formats decode as the colours the palette
  shows, as a viewer does: one grey channel when every pixel is an opaque grey (a 0/255
  mask saved as a palette PNG stays 0/255), else RGB (RGBA with a transparency chunk),
  which a multilabel mask reads as its channels and a binary mask refuses.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from seg.config.specs import MaskSpec  # noqa: F401 - re-exported: the spec the decoders take
from seg.errors import DataError  # noqa: F401 - raised here, imported from here by callers

BINARY_VALUES = (0, 1, 255)


def read_image(path: Path) -> np.ndarray:
    """Read an image as RGB uint8 [H,W,3] (grayscale is repeated to 3 channels)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot read the image (missing, corrupt or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_PALETTE, PNG_GREY_ALPHA = 3, 4  # IHDR colour types (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA)


def _colour_type(head: bytes) -> int | None:
    """The colour type in a PNG's IHDR header (byte 25), or None when ``head`` is not a PNG's start."""
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[25]


def png_colour_type(path: Path) -> int | None:
    """The colour type in a PNG's IHDR header (first 26 bytes); None for anything else or an unreadable file."""
    try:
        fd = os.open(path, os.O_RDONLY)  # ~4 us; open() with a Python file object costs twice that
    except OSError:
        return None
    try:
        return _colour_type(os.read(fd, 26))
    except OSError:
        return None
    finally:
        os.close(fd)


def _cannot_read(path: Path) -> DataError:
    return DataError(f"{path}: cannot read the mask (missing, corrupt or not an image file)")


def _palette_indices(path: Path) -> np.ndarray | None:
    """The indices [H,W] uint8 of a palette PNG (PIL; OpenCV only gives the colours); None if not mode P."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.array(image) if image.mode == "P" else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise _cannot_read(path) from None


def _palette_colours(raw: np.ndarray) -> np.ndarray:
    """A palette PNG's colours (RGB or RGBA): one grey plane [H,W] when every pixel is an opaque grey."""
    if raw.ndim != 3 or (raw.shape[2] == 4 and not np.all(raw[..., 3] == 255)):
        return raw
    grey = raw[..., 0]
    if np.array_equal(grey, raw[..., 1]) and np.array_equal(grey, raw[..., 2]):
        return np.ascontiguousarray(grey)
    return raw


def read_raw(path: Path, palette_indices: bool = False) -> np.ndarray:
    """Read a mask file unchanged: any bit depth, channels in RGB(A) order.

    A grey+alpha PNG gives [H,W,2] (grey, alpha). A palette PNG gives its indices [H,W]
    with ``palette_indices`` (index masks, instance labels), else its colours: [H,W] when
    every pixel is an opaque grey, else [H,W,3] RGB or [H,W,4] RGBA (see the module docstring).
    The PNG colour type comes from the file's first 26 bytes (a few microseconds a file).
    """
    colour_type = png_colour_type(path)
    if colour_type == PNG_PALETTE and palette_indices:
        indices = _palette_indices(path)
        if indices is not None:
            return indices
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise _cannot_read(path)
    if colour_type == PNG_GREY_ALPHA and raw.ndim == 3 and raw.shape[2] == 4:
        return raw[..., [0, 3]]  # OpenCV's BGRA: B is the grey (= G = R), A the alpha; a contiguous copy
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB if raw.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    if colour_type == PNG_PALETTE:
        raw = _palette_colours(raw)
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


def channels_hint(path: Path, channels: int) -> str:
    """What a mask file with ``channels`` channels, where one is expected, probably is (for messages)."""
    if channels == 2:
        return "a grey+alpha PNG: save it as grayscale without alpha"
    if png_colour_type(path) == PNG_PALETTE:
        return ("a palette PNG with colours: save it as grayscale, or use data.mask_format: index "
                "to read the palette indices")
    return "a binary mask stored as RGB: save it as grayscale"


def _single_channel(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.ndim == 3:
        raise DataError(f"{path}: mask has {raw.shape[2]} channels but a single-channel mask is expected "
                        f"({channels_hint(path, raw.shape[2])})")
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
    """16-bit (or 8-bit) instance labels -> int32 [H,W], 0 = background.

    Read them with ``read_raw(path, palette_indices=True)``: a palette PNG's indices are the labels.
    """
    raw = _single_channel(raw, path)
    if raw.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: instance labels must be 8- or 16-bit PNG, got {raw.dtype}")
    return raw.astype(np.int32)


def load_mask(mask_paths: tuple[Path, ...], spec: MaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read and decode the mask file(s) of one image: target [H,W,C] uint8, valid [H,W] bool."""
    raws = [read_raw(p, palette_indices=spec.fmt == "index") for p in mask_paths]
    if spec.fmt == "multilabel":
        return decode_multilabel(raws, spec, list(mask_paths))
    if spec.fmt == "index":
        return decode_index(raws[0], spec, mask_paths[0])
    return decode_binary(raws[0], spec, mask_paths[0])
