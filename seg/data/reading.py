"""Read image and mask files unchanged: RGB images, raw mask values, and the PNG colour types OpenCV alone misreads.

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

from seg.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_PALETTE, PNG_GREY_ALPHA = 3, 4  # IHDR colour types (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA)
CANNOT_READ_MASK = "cannot read the mask (missing, corrupt or not an image file)"


def read_image(path: Path) -> np.ndarray:
    """Read an image as RGB uint8 [H,W,3] (grayscale is repeated to 3 channels)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot read the image (missing, corrupt or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
    return DataError(f"{path}: {CANNOT_READ_MASK}")


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
    Raises DataError("{path}: cannot read the mask ...") for a missing or unreadable file.
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


def channels_hint(path: Path, channels: int) -> str:
    """What a mask file with ``channels`` channels, where one is expected, probably is (for messages)."""
    if channels == 2:
        return "a grey+alpha PNG: save it as grayscale without alpha"
    if png_colour_type(path) == PNG_PALETTE:
        return (
            "a palette PNG with colours: save it as grayscale, or use data.mask_format: index "
            "to read the palette indices"
        )
    return "a binary mask stored as RGB: save it as grayscale"
