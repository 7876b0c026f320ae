"""Foreground oversampling (``data.sampling: foreground``): where a training crop is placed.

nnU-Net forces a third of its patches to contain foreground (``oversample_foreground_percent``),
with the foreground locations of each class precomputed once. seg does the same per training item:

1. a coin seeded by (run.seed, epoch, item index) comes up "force" with probability
   ``data.foreground_fraction``;
2. if forced, a channel is chosen among those with a valid positive pixel in the image: uniformly
   (``data.foreground_channel: uniform``) or the rarest of them in the training split (``rarest``);
3. one of that channel's positive locations is drawn, and the crop is placed uniformly among the
   positions that contain it.

An image with no positive pixel, or an unforced item, gets the usual random crop. The locations are a
bounded sample (at most :data:`MAX_LOCATIONS` per channel, drawn with a generator seeded by the item's
image, so every worker finds the same) found once per image and cached in the process; no rejection loop.
Everything is a function of (seed, epoch, index), so the crops of an epoch do not depend on the batch
size, the number of workers or of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_LOCATIONS = 1000
CHANNEL_RULES = ("uniform", "rarest")


@dataclass(frozen=True)
class CropPlan:
    """Where an item's crop goes: ``channel`` is the channel it was forced onto (None: not forced or
    nothing to force onto), ``top``/``left`` its corner (None: the usual random crop)."""

    forced: bool
    channel: int | None = None
    top: int | None = None
    left: int | None = None


def positive_locations(target: np.ndarray, valid: np.ndarray, key: int) -> list[np.ndarray]:
    """Per channel, an (n, 2) int array of (row, column) of valid positive pixels, n <= MAX_LOCATIONS,
    a sample drawn with a generator seeded by ``key`` (the image's index) when there are more."""
    rng = np.random.default_rng((key, 7))
    out = []
    for channel in range(target.shape[2]):
        rows, cols = np.nonzero((target[..., channel] > 0) & (valid > 0))
        points = np.stack([rows, cols], axis=1).astype(np.int32)
        if len(points) > MAX_LOCATIONS:
            points = points[np.sort(rng.choice(len(points), MAX_LOCATIONS, replace=False))]
        out.append(points)
    return out


@dataclass(frozen=True)
class ForegroundSampler:
    """The foreground rule of a run: probability, crop side, channel rule and the training split's
    channel order for ``rarest`` (channel indices, rarest first)."""

    fraction: float
    crop: int
    rule: str = "uniform"
    rarest_first: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if self.rule not in CHANNEL_RULES:
            raise ValueError(f"rule must be one of {CHANNEL_RULES}, got {self.rule!r}")
        if self.crop <= 0:
            raise ValueError(f"crop must be a positive side in pixels, got {self.crop}")
        if self.rule == "rarest" and not self.rarest_first:
            raise ValueError("rule rarest needs rarest_first, the channels ordered rarest first")

    def plan(self, locations: list[np.ndarray], shape: tuple[int, int], seed: int, epoch: int, index: int) -> CropPlan:
        """The crop of item ``index`` in ``epoch`` for an image of ``shape`` (rows, columns)."""
        rng = np.random.default_rng((seed, epoch, index, 0x5EED))
        if rng.random() >= self.fraction:
            return CropPlan(forced=False)
        present = [c for c, points in enumerate(locations) if len(points)]
        if not present:
            return CropPlan(forced=True)
        if self.rule == "rarest":
            unranked = len(self.rarest_first)  # a channel missing from the order comes after every ranked one
            channel = min(present, key=lambda c: self.rarest_first.index(c) if c in self.rarest_first else unranked)
        else:
            channel = present[int(rng.integers(len(present)))]
        points = locations[channel]
        row, col = points[int(rng.integers(len(points)))]
        return CropPlan(True, channel, self._start(rng, int(row), shape[0]), self._start(rng, int(col), shape[1]))

    def _start(self, rng: np.random.Generator, point: int, size: int) -> int:
        """A uniform start among those whose window of side ``crop`` holds ``point`` and lies in [0, size)."""
        if size <= self.crop:
            return 0  # the whole side; the transform pads it to the crop
        low, high = max(0, point - self.crop + 1), min(point, size - self.crop)
        return int(rng.integers(low, high + 1))


def rarest_first(positive_pixels: np.ndarray) -> tuple[int, ...]:
    """Channel indices ordered by positive pixel count in the training split, rarest first (ties by index)."""
    return tuple(int(c) for c in np.argsort(np.asarray(positive_pixels), kind="stable"))
