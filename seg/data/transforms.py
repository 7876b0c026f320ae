"""Augmentation recipes (albumentations), applied jointly to image, target, valid and weight map.

A weight map must move with its mask, so every per-pixel array is passed as an
albumentations ``mask`` target (nearest-neighbour, same geometry). Padding fills
``valid`` with 0: padded pixels are ignored by loss and metrics.
"""

from __future__ import annotations

import albumentations as A
import cv2

PER_PIXEL_TARGETS = {"valid": "mask", "weight_map": "mask"}


def train_transform(crop: int) -> A.Compose:
    """Random crop of side ``crop`` (padding smaller images first), flips, 90 degree turns."""
    return A.Compose(
        [
            A.PadIfNeeded(min_height=crop, min_width=crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
            A.RandomCrop(height=crop, width=crop),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Normalize(),
        ],
        additional_targets=PER_PIXEL_TARGETS,
        seed=0,
    )


def eval_transform() -> A.Compose:
    """No resizing: pad bottom/right to a multiple of 32 (the U-Net's downsampling), padding ignored."""
    return A.Compose(
        [
            A.PadIfNeeded(
                min_height=None,
                min_width=None,
                pad_height_divisor=32,
                pad_width_divisor=32,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
            ),
            A.Normalize(),
        ],
        additional_targets=PER_PIXEL_TARGETS,
        seed=0,
    )
