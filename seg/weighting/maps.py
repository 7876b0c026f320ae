"""Class-frequency weights: SegNet's median-frequency balancing and the per-pixel class weight map.

The map gives each pixel the weight of its true class (w_c of the U-Net map, without the border term).
"""

from __future__ import annotations

import numpy as np
import torch

MASK_FORMATS = ("binary", "instance", "index", "multilabel")  # the values of data.mask_format


def median_frequency_weights(class_pixels: np.ndarray, image_pixels: np.ndarray | None = None) -> np.ndarray:
    """SegNet's median-frequency balancing: w_k = median(freq) / freq_k.

    Args:
        class_pixels: [K] pixel count of each class (training split only).
        image_pixels: optional [K] total pixels of the images in which class k is present
            (SegNet's definition: freq_k = class_pixels_k / image_pixels_k). Without it,
            freq_k = class_pixels_k / sum(class_pixels).

    Returns:
        float64 [K]. The median is taken over classes with freq > 0 only. A class with no
        pixels has freq 0 and weight ``inf``: callers clamp (seg clamps to ``loss.clamp``,
        default [0.001, 1000]). Raises ValueError when no class has any pixel.
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0):
        raise ValueError(f"class_pixels must be a 1-D array of counts >= 0, got {class_pixels!r}")
    if image_pixels is None:
        totals = np.full_like(counts, counts.sum())
    else:
        totals = np.asarray(image_pixels, dtype=np.float64)
        if totals.shape != counts.shape or np.any(totals < counts):
            raise ValueError("image_pixels must have the shape of class_pixels and be >= it")
    present = counts > 0
    if not present.any():
        raise ValueError("no class has any pixel: median-frequency weights are undefined")
    freq = np.zeros_like(counts)
    freq[present] = counts[present] / totals[present]
    weights = np.full_like(counts, np.inf)
    weights[present] = np.median(freq[present]) / freq[present]
    return weights


def class_weight_map(
    target: torch.Tensor,
    valid: torch.Tensor | None,
    class_weights: torch.Tensor,
    mask_format: str,
) -> torch.Tensor:
    """Per-pixel weight [B,1,H,W] set by each pixel's true class.

    Args:
        target: [B,C,H,W] targets in [0, 1]; soft targets count as positive where >= 0.5.
        valid: [B,1,H,W] bool, False = ignore (weight 0); None = every pixel valid.
        class_weights: 1-D tensor of class weights (e.g. from median_frequency_weights):
            * "binary" or "instance" (C == 1): 2 entries (w_negative, w_positive); a pixel gets w_positive
              where target >= 0.5, else w_negative.
            * "index" (one-hot, C classes, ignore removed): C entries; a pixel gets
              class_weights[argmax_c target].
            * "multilabel" (C channels that may overlap): C + 1 entries, the channels then
              the all-zero "background" class; a pixel gets the largest class_weights[c]
              over its positive channels (the rarest class it belongs to wins), or
              class_weights[C] where no channel is positive.
        mask_format: the masks' format (``MaskSpec.fmt``): "binary", "instance", "index" or "multilabel".

    Returns:
        [B,1,H,W] float (class_weights' dtype, float32 if it is an integer tensor), on
        target's device. Pure tensor ops without host synchronisation: it compiles with
        ``torch.compile(fullgraph=True)`` for a fixed format.
    """
    if target.ndim != 4:
        raise ValueError(f"target must be [B,C,H,W], got shape {tuple(target.shape)}")
    channels = target.shape[1]
    expected = {"binary": 2, "instance": 2, "index": channels, "multilabel": channels + 1}
    if mask_format not in expected:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    one_channel = mask_format in ("binary", "instance")
    if one_channel and channels != 1:
        raise ValueError(f"mask_format {mask_format!r} needs C == 1, got C = {channels}")
    if class_weights.ndim != 1 or class_weights.shape[0] != expected[mask_format]:
        raise ValueError(
            f"mask_format {mask_format!r} with C = {channels} needs {expected[mask_format]} class weights, "
            f"got shape {tuple(class_weights.shape)}"
        )
    dtype = class_weights.dtype if class_weights.is_floating_point() else torch.float32
    weights = class_weights.to(device=target.device, dtype=dtype)
    if one_channel:
        weight = weights[(target >= 0.5).long()]
    elif mask_format == "index":
        weight = weights[target.argmax(dim=1, keepdim=True)]
    else:
        positive = target >= 0.5
        per_channel = weights[:channels].view(1, channels, 1, 1)
        best = torch.where(positive, per_channel, torch.full_like(per_channel, -torch.inf)).amax(dim=1, keepdim=True)
        weight = torch.where(positive.any(dim=1, keepdim=True), best, weights[channels])
    if valid is not None:
        weight = torch.where(valid, weight, torch.zeros_like(weight))
    return weight
