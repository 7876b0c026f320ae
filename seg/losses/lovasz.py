"""The Lovász hinge (Berman et al. 2018): a convex surrogate of the Jaccard loss, one hinge per channel.

For a channel, with hinge errors e_i = 1 - x_i * (2 y_i - 1) over its pixels sorted in decreasing
order, the loss is sum_i relu(e_i) * g_i, where g is the gradient of the Lovász extension of the
Jaccard loss at the sorted ground truth (:func:`lovasz_grad`). Unlike smp's multilabel Lovász, which
pools all channels into one hinge, each channel has its own, and the losses are averaged.

Ignored pixels (``valid`` False) count as negatives and are sorted last, with the error
``finfo.min``, so relu gives them no loss, and since the gradient at a position only depends on the
ground truth sorted before it, the valid pixels' terms equal those of the hinge over valid pixels
alone. No boolean indexing, so no host synchronisation.

Labels must be hard (0 or 1): the Lovász extension is defined on binary ground truth. With
``check_labels`` (the default) soft labels are refused with a ValueError (one host sync); training,
whose targets are 0/1 by construction, skips the check.
A channel with no positive pixel has g = (1, 0, 0, ...): its loss is relu of its largest error.
With per_image, an image with no valid pixel is left out of the mean (as for the region losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seg.losses.bce import Reduce
from seg.losses.region import scored_mean

FORMS = ("batch", "per_image")


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss along the last axis (ground truth sorted
    by decreasing error)."""
    positives = gt_sorted.sum(dim=-1, keepdim=True)
    intersection = positives - gt_sorted.cumsum(dim=-1)
    union = positives + (1.0 - gt_sorted).cumsum(dim=-1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_hinge(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    form: str = "batch",
    check_labels: bool = True,
    reduce: Reduce | None = None,
) -> torch.Tensor:
    """Mean over channels (and images for per_image) of the Lovász hinge of [B,C,H,W] logits; () tensor.

    Under DDP (``reduce``), per_image averages over every process's images; ``batch`` sorts the pixels
    of this process's share only (one hinge over the global batch would need all its pixels here)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    logits = logits.float()
    target = target.to(logits.dtype)
    b, c = logits.shape[:2]
    mask = torch.ones_like(logits[:, :1], dtype=torch.bool) if valid is None else valid.bool()
    mask = mask.expand_as(logits)
    if check_labels and bool(((target > 0) & (target < 1) & mask).any()):
        raise ValueError(
            "lovasz: the target has soft labels (values between 0 and 1); the Lovász hinge needs 0/1 labels"
        )
    target = target * mask  # an ignored pixel is no positive
    errors = 1.0 - logits * (2.0 * target - 1.0)
    errors = torch.where(mask, errors, torch.finfo(errors.dtype).min)
    if form == "batch":  # [C, B*H*W]
        errors, target = errors.transpose(0, 1).reshape(c, -1), target.transpose(0, 1).reshape(c, -1)
    else:  # [B*C, H*W]
        errors, target = errors.reshape(b * c, -1), target.reshape(b * c, -1)
    errors_sorted, order = torch.sort(errors, dim=-1, descending=True)
    grad = lovasz_grad(torch.gather(target, -1, order))
    losses = (F.relu(errors_sorted) * grad).sum(dim=-1)
    if form == "batch":
        return losses.mean()
    return scored_mean(losses.view(b, c), valid, reduce)
