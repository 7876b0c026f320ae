"""Weighted binary cross-entropy with logits (and its focal form): apply_as, ignore mask, normalisation.

Per element, with logit x, target y in [0,1], weight w (scalar, (C,1,1) or a map):

- ``apply_as="pos_weight"``: l = -[w*y*log s(x) + (1-y)*log(1-s(x))]; the weight as applied
  to the element is a = 1 + (w-1)*y (w on positives, 1 on negatives);
- ``apply_as="weight"``:     l = -w*[y*log s(x) + (1-y)*log(1-s(x))]; a = w.

Reduction over valid elements (``valid`` False = ignored, contributes nothing):

- ``normalize=False``: sum(l) / count  (PyTorch's 'mean': weighting changes the loss scale);
- ``normalize=True``:  sum(l) / sum(a) (every strategy at the same loss scale).

Focal loss (Lin et al. 2017) is the same with ``gamma > 0``: l is multiplied by (1 - p_t)^gamma,
p_t = p*y + (1-p)*(1-y) (torchvision's ``sigmoid_focal_loss`` form, which also covers soft labels);
its alpha is a weight as above. The normalisation divides by the applied weights, not by the
modulating factors.

Besides the loss, :func:`weighted_bce` returns the sums needed for the effective
pos_weight (mean weight on positives / mean weight on negatives) and the mean
applied weight, as tensors, without host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seg.weighting.formulas import check_channel_weight

APPLY_AS = ("pos_weight", "weight")
Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums over the processes of a DDP job (differentiable), or None


@dataclass
class WeightSums:
    """Per channel sums over valid elements (float64, on the device), summed over steps.

    pos_weight_sum / pos_count: applied weight and count of positives (soft labels
    count fractionally); likewise for negatives. applied_sum / elements: all elements.
    """

    pos_weight_sum: torch.Tensor
    pos_count: torch.Tensor
    neg_weight_sum: torch.Tensor
    neg_count: torch.Tensor

    def __add__(self, other: WeightSums) -> WeightSums:
        return WeightSums(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=False)))

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        return self.pos_weight_sum, self.pos_count, self.neg_weight_sum, self.neg_count

    def effective_pos_weight(self) -> torch.Tensor:
        """(C,) mean weight on positives / mean weight on negatives (1 where undefined)."""
        pos_mean = self.pos_weight_sum / self.pos_count.clamp(min=1e-12)
        neg_mean = self.neg_weight_sum / self.neg_count.clamp(min=1e-12)
        defined = (self.pos_count > 0) & (self.neg_count > 0)
        return torch.where(defined, pos_mean / neg_mean.clamp(min=1e-12), torch.ones_like(pos_mean))

    def mean_applied_weight(self) -> torch.Tensor:
        """() mean applied weight over all valid elements."""
        total = (self.pos_weight_sum + self.neg_weight_sum).sum()
        return total / (self.pos_count + self.neg_count).sum().clamp(min=1e-12)


def weight_sums(
    target: torch.Tensor, mask: torch.Tensor, pos_w: torch.Tensor | None, neg_w: torch.Tensor | None
) -> WeightSums:
    """The per-channel WeightSums of weights ``pos_w`` on positives and ``neg_w`` on negatives over the
    elements where ``mask`` ([B,1,H,W], 1 = valid) is set; soft labels count fractionally.

    A weight is None (1), a () scalar, (C,1,1) or a [B,1|C,H,W] map. Only a map is multiplied pixel by
    pixel: the others multiply the per-channel counts (negatives: valid pixels minus positives).
    """
    dims = (0, 2, 3)
    pos_share = target * mask
    pos_count = pos_share.sum(dim=dims).double()
    neg_count = mask.sum(dim=dims).double() - pos_count

    def weighted(weight: torch.Tensor | None, share: Callable[[], torch.Tensor], count: torch.Tensor) -> torch.Tensor:
        if weight is None:
            return count
        if weight.dim() < 4:  # () or (C,1,1): the same weight on every pixel of a channel
            return weight.double().flatten() * count
        return (weight * share()).sum(dim=dims).double()

    return WeightSums(
        pos_weight_sum=weighted(pos_w, lambda: pos_share, pos_count),
        pos_count=pos_count,
        neg_weight_sum=weighted(neg_w, lambda: (1.0 - target) * mask, neg_count),
        neg_count=neg_count,
    )


def weighted_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    apply_as: str = "pos_weight",
    normalize: bool = False,
    gamma: float = 0.0,
    reduce: Reduce | None = None,
) -> tuple[torch.Tensor, WeightSums]:
    """Weighted BCE over [B,C,H,W] logits (focal loss when ``gamma > 0``); returns (loss (), WeightSums).

    weight: None, a 0-d scalar, a (C,1,1) per-channel weight or a [B,1|C,H,W] map
    (validated: a (C,) tensor is refused). valid: [B,1,H,W] bool or None. reduce: sums the loss's sum and
    its denominator over the processes of a DDP job (the loss of the global batch); the WeightSums stay
    this process's.
    """
    if apply_as not in APPLY_AS:
        raise ValueError(f"apply_as must be one of {APPLY_AS}, got {apply_as!r}")
    logits = logits.float()
    target = target.to(logits.dtype)
    mask = torch.ones_like(logits[:, :1]) if valid is None else valid.to(logits.dtype)
    pos_w: torch.Tensor | None
    neg_w: torch.Tensor | None
    if weight is None:  # no pos_weight: F.binary_cross_entropy_with_logits's plain (cheaper) path
        elementwise = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        pos_w = neg_w = None
    elif apply_as == "pos_weight":
        weight = check_channel_weight(weight, target).to(logits.dtype)
        elementwise = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
        pos_w, neg_w = weight, None
    else:
        weight = check_channel_weight(weight, target).to(logits.dtype)
        elementwise = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
        pos_w = neg_w = weight
    if gamma:
        probs = torch.sigmoid(logits)  # 1 - p_t = p (1 - 2y) + y: one op on the logits' graph, not five
        one_minus_p_t = torch.addcmul(target, probs, 1.0 - 2.0 * target)
        elementwise = elementwise * one_minus_p_t.clamp(min=0.0) ** gamma
    elementwise = elementwise * mask
    sums = weight_sums(target, mask, pos_w, neg_w)
    total = elementwise.sum()
    if normalize:
        denominator = (sums.pos_weight_sum + sums.neg_weight_sum).sum()
    else:
        denominator = mask.sum() * logits.shape[1]
    denominator = denominator.to(total.dtype)
    if reduce is not None:
        total, denominator = reduce(torch.stack([total, denominator])).unbind()
    return total / denominator.clamp(min=1e-12), sums
