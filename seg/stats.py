"""Streaming mask statistics: the counts that weights and the audit are built on.

One pass over the masks, one image at a time: memory does not grow with the
number of masks. Counts are integers (int64), summed over images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from seg.data.folders import Sample
from seg.data.masks import MaskSpec, load_mask


@dataclass
class MaskCounts:
    """Pixel counts over a set of masks with C channels.

    positive_pixels[c]: valid pixels where channel c is positive.
    valid_pixels: pixels that are not ignored (the same for every channel).
    all_zero_pixels: valid pixels where no channel is positive.
    images_with_positives[c]: images with at least one positive pixel in channel c.
    """

    num_channels: int
    positive_pixels: np.ndarray = field(default=None)
    valid_pixels: int = 0
    total_pixels: int = 0
    all_zero_pixels: int = 0
    images: int = 0
    images_with_positives: np.ndarray = field(default=None)

    def __post_init__(self) -> None:
        if self.positive_pixels is None:
            self.positive_pixels = np.zeros(self.num_channels, dtype=np.int64)
        if self.images_with_positives is None:
            self.images_with_positives = np.zeros(self.num_channels, dtype=np.int64)

    def add(self, target: np.ndarray, valid: np.ndarray) -> None:
        """Add one image: target uint8 [H,W,C] in {0,1}, valid bool [H,W]."""
        positive = target.reshape(-1, self.num_channels)[valid.ravel()]
        per_channel = positive.sum(axis=0, dtype=np.int64)
        self.positive_pixels += per_channel
        self.images_with_positives += per_channel > 0
        n_valid = int(valid.sum())
        self.valid_pixels += n_valid
        self.total_pixels += valid.size
        self.all_zero_pixels += n_valid - int(np.count_nonzero(positive.any(axis=1)))
        self.images += 1

    def merge(self, other: "MaskCounts") -> None:
        self.positive_pixels += other.positive_pixels
        self.images_with_positives += other.images_with_positives
        self.valid_pixels += other.valid_pixels
        self.total_pixels += other.total_pixels
        self.all_zero_pixels += other.all_zero_pixels
        self.images += other.images

    @property
    def negative_pixels(self) -> np.ndarray:
        """Per channel, valid pixels where the channel is 0 (the ``pixels`` definition)."""
        return self.valid_pixels - self.positive_pixels


def count_masks(samples: list[Sample], spec: MaskSpec, progress: bool = True) -> MaskCounts:
    """Count the masks of ``samples`` in one streaming pass."""
    counts = MaskCounts(spec.num_classes)
    for sample in tqdm(samples, desc="mask statistics", unit="mask", disable=not progress, leave=False):
        target, valid = load_mask(sample.masks, spec)
        counts.add(target, valid)
    return counts
