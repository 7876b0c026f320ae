"""Decode the file(s) of one mask per format, strict (DataError at the first fault) or tolerant (every fault listed).

Formats (``data.mask_format``):

- ``binary``: one single-channel PNG per image, values 0/1 or 0/255;
  ``positive_values`` selects the positive class (ISBI: ``[0]``, the membrane).
- ``index``: one PNG of class indices 0..C-1, ``ignore_index`` marks unlabelled pixels;
  turned into a one-hot target with the ignore pixels removed.
- ``multilabel``: channels that may overlap: one PNG per channel in ``masks/<channel>/``,
  or one multi-channel PNG in ``masks/`` (channel order R, G, B, A; grey+alpha: grey, alpha).
- ``instance``: a binary mask as for ``binary`` plus 16-bit instance labels in
  ``instances/`` (0 = background), used by the border weight map.

One path for every reader: :func:`decode_mask` reads the file(s) (``seg.data.reading.read_raw``:
grey+alpha and palette PNGs are explained there), makes one 2-D plane per channel and checks
channels, sizes and every value (one histogram a plane). Training's :func:`load_mask` turns the
planes into a one-hot target; counting and the audit (``seg.data.counts.measure_mask``) count
them from the histograms. :class:`Faults` decides what a fault does: strict raises
``DataError("{file}: {detail}")``, tolerant lists a :class:`Problem` and reads on where it can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from seg.config.specs import MaskSpec
from seg.data.reading import (
    CANNOT_READ_MASK,
    channels_hint,
    read_raw,
)
from seg.errors import DataError

BINARY_VALUES = (0, 1, 255)


@dataclass(frozen=True)
class Problem:
    """Something wrong with one file (or folder): what the audit lists."""

    file: str
    kind: str
    detail: str


@dataclass
class Faults:
    """Where faults go: ``strict`` raises DataError("{file}: {detail}") at the first; else they are listed."""

    strict: bool = True
    problems: list[Problem] = field(default_factory=list)

    def add(self, file: Path | str, kind: str, detail: str, then: str = "") -> None:
        """Report a fault; ``then`` (tolerant only) says what the reading does about it, e.g. "; not counted"."""
        if self.strict:
            raise DataError(f"{file}: {detail}")
        self.problems.append(Problem(str(file), kind, detail + then))


@dataclass
class Planes:
    """One mask, decoded: a raw 2-D plane per channel (binary, index: the mask itself), checked.

    ``planes`` is empty when the mask cannot be decoded (tolerant: unreadable, channels missing,
    or different sizes). ``values[k]`` maps each raw value of ``planes[k]`` to its pixel count.
    """

    dtype: str = ""  # how the first file is stored ("uint8", "uint16 (3 channels)"); "" when unreadable
    planes: list[np.ndarray] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # the file of each plane
    values: list[dict[int, int]] = field(default_factory=list)


@lru_cache(maxsize=64)
def allowed_values(spec: MaskSpec) -> frozenset[int]:
    """Raw values a mask file (or multilabel channel) may hold."""
    if spec.fmt == "index":
        return frozenset(range(spec.num_classes)) | ({spec.ignore_index} if spec.ignore_index is not None else set())
    if spec.fmt == "multilabel":
        return frozenset(BINARY_VALUES)
    return frozenset(BINARY_VALUES) | frozenset(spec.positive_values or ())


def value_counts(plane: np.ndarray, two_valued_first: bool = True) -> dict[int, int]:
    """Exact pixel count of every value in a 2-D mask: {value: pixels}.

    A mask holding 0 and one other value (the common binary case) is settled with two
    vectorised counts (~0.1 ms at 512x512); anything else takes one histogram of the
    8- or 16-bit values (``cv2.calcHist``, 3x faster than ``np.bincount`` here; its
    float32 counts are exact below 2**24 pixels, above that ``np.bincount`` is used).
    """
    size = plane.size
    if plane.dtype in (np.uint8, np.uint16):
        if two_valued_first:
            nonzero = cv2.countNonZero(plane)
            if nonzero == 0:
                return {0: size}
            top = int(plane.max())
            if np.count_nonzero(plane == top) == nonzero:
                return {top: size} if nonzero == size else {0: size - nonzero, top: nonzero}
        bins = 256 if plane.dtype == np.uint8 else 65536
        if size < 1 << 24:
            counts = cv2.calcHist([plane], [0], None, [bins], [0, bins]).ravel().astype(np.int64)
        else:
            counts = np.bincount(plane.ravel(), minlength=bins)
        present = np.flatnonzero(counts)
        return dict(zip(present.tolist(), counts[present].tolist(), strict=False))
    values, counts = np.unique(plane, return_counts=True)
    return {v.item(): int(n) for v, n in zip(values, counts, strict=False)}


@lru_cache(maxsize=64)
def _dtype_name_cached(dtype: np.dtype, channels: int) -> str:
    return dtype.name + (f" ({channels} channels)" if channels > 1 else "")


def _dtype_name(raw: np.ndarray) -> str:
    """``uint8``, ``uint16 (3 channels)``: how a mask file is stored."""
    return _dtype_name_cached(raw.dtype, raw.shape[2] if raw.ndim == 3 else 1)


def describe(spec: MaskSpec) -> str:
    """``a binary mask``, ``an index mask with 11 classes and ignore_index 11``: what a mask file must be."""
    if spec.fmt == "index":
        return f"an index mask with {spec.num_classes} classes" + (
            f" and ignore_index {spec.ignore_index}" if spec.ignore_index is not None else ""
        )
    return "a multilabel channel" if spec.fmt == "multilabel" else "a binary mask"  # instance: its binary mask


def _single_plane(raw: np.ndarray, path: Path, faults: Faults) -> np.ndarray | None:
    """The 2-D plane of a file that must be single-channel; tolerant: an RGB copy of one plane is read from it."""
    if raw.ndim == 2:
        return raw
    channels = raw.shape[2]
    same = all(np.array_equal(raw[..., 0], raw[..., k]) for k in range(1, channels))
    faults.add(
        path,
        "rgb_mask",
        f"mask has {channels} channels but a single-channel mask is expected ({channels_hint(path, channels)})",
        "; all equal: counted from the first" if same else "; channels differ: not counted",
    )
    return np.ascontiguousarray(raw[..., 0]) if same else None


def _planes(
    raws: list[np.ndarray], paths: Sequence[Path], spec: MaskSpec, faults: Faults
) -> tuple[list[np.ndarray], list[Path]] | None:
    """One 2-D plane per mask channel (binary/index: the mask itself), or None if there is none to read."""
    if spec.fmt == "multilabel" and len(raws) == 1 and spec.num_classes > 1:
        raw, path = raws[0], paths[0]
        if raw.ndim != 3 or raw.shape[2] < spec.num_classes:
            got = 1 if raw.ndim == 2 else raw.shape[2]
            detail = f"multilabel mask has {got} channel(s); data.classes lists {spec.num_classes}"
            faults.add(path, "too_few_channels", detail)
            return None
        return list(cv2.split(raw)[: spec.num_classes]), [path] * spec.num_classes
    planes = []
    for raw, path in zip(raws, paths, strict=False):
        plane = _single_plane(raw, path, faults)
        if plane is None:
            return None
        planes.append(plane)
    if len({p.shape for p in planes}) > 1:
        sizes = ", ".join(f"{p.name} {q.shape[1]}x{q.shape[0]}" for p, q in zip(paths, planes, strict=False))
        faults.add(paths[0], "size_mismatch", f"the channel masks of this image differ in size: {sizes}")
        return None
    return planes, list(paths)


def _check_values(values: dict[int, int], spec: MaskSpec, path: Path, faults: Faults, where: str) -> None:
    allowed = allowed_values(spec)
    bad = sorted(v for v in values if v not in allowed)
    if not bad:
        return
    pixels = sum(values[v] for v in bad)
    shown = ", ".join(str(v) for v in bad[:6]) + (" ..." if len(bad) > 6 else "")
    hint = (
        "likely resized with interpolation: use nearest-neighbour"
        if spec.fmt != "index"
        else "check data.classes / ignore_index, or a resize with interpolation"
    )
    faults.add(
        path,
        "unexpected_values",
        f"{where}value(s) {shown} not valid for {describe(spec)} (allowed: {sorted(allowed)}); "
        f"{pixels} of {sum(values.values())} pixels; {hint}",
    )


def decode_mask(mask_paths: Sequence[Path], spec: MaskSpec, faults: Faults) -> Planes:
    """Read the file(s) of one mask into one 2-D plane per channel, with each plane's value counts.

    Checks, in this order: every file readable; one plane per channel (single-channel files, or a
    multilabel file with enough channels); equal sizes; every value allowed for the format. Tolerant
    (``faults.strict`` False), values that are not allowed are kept as they are (and listed).
    """
    raws = []
    for path in mask_paths:
        try:
            raws.append(read_raw(path, palette_indices=spec.fmt == "index"))
        except DataError:
            faults.add(path, "unreadable", CANNOT_READ_MASK)
            return Planes()
    decoded = Planes(_dtype_name(raws[0]))
    found = _planes(raws, mask_paths, spec, faults)
    if found is None:
        return decoded
    decoded.planes, decoded.paths = found
    one_file = len(set(decoded.paths)) < len(decoded.paths)  # a multi-channel multilabel file: name the channel
    for name, plane, path in zip(spec.classes, decoded.planes, decoded.paths, strict=False):
        values = value_counts(plane, two_valued_first=spec.fmt != "index")
        _check_values(values, spec, path, faults, f"channel '{name}': " if one_file else "")
        decoded.values.append(values)
    return decoded


def load_mask(mask_paths: Sequence[Path], spec: MaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode the mask file(s) of one image, strictly: target [H,W,C] uint8 in {0,1}, valid [H,W] bool.

    Raises DataError naming the file at the first fault.
    """
    planes = decode_mask(mask_paths, spec, Faults(strict=True)).planes
    plane = planes[0]
    if spec.fmt == "index":
        target = (plane[..., None] == np.arange(spec.num_classes, dtype=plane.dtype)).astype(np.uint8)
        valid = plane != spec.ignore_index if spec.ignore_index is not None else np.ones(plane.shape, dtype=bool)
        return target, valid
    if spec.fmt == "multilabel":
        target = np.stack([p > 0 for p in planes], axis=-1).astype(np.uint8)
    else:  # binary, instance
        target = np.isin(plane, spec.positive_values or ()).astype(np.uint8)[..., None]
    return target, np.ones(plane.shape, dtype=bool)


def decode_instances(raw: np.ndarray, path: Path) -> np.ndarray:
    """16-bit (or 8-bit) instance labels -> int32 [H,W], 0 = background; DataError naming the file if not.

    Read them with ``read_raw(path, palette_indices=True)``: a palette PNG's indices are the labels.
    """
    plane = _single_plane(raw, path, Faults(strict=True))
    assert plane is not None  # strict: a multi-channel file raised
    if plane.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: instance labels must be 8- or 16-bit PNG, got {plane.dtype}")
    return plane.astype(np.int32)
