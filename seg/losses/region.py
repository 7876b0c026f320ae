"""Region losses over soft counts: soft Dice and (focal) Tversky, per channel, over seg's ``valid`` mask.

With p = sigmoid(logit) and y the target in [0,1], over the valid pixels of a channel:
TP = sum(p*y), FP = sum(p*(1-y)), FN = sum((1-p)*y), and with a smoothing s >= 0:

- Dice (the classic L1 form, Milletari et al. 2016 with smoothing): D = (2 TP + s) / (2 TP + FP + FN + s),
  where 2 TP + FP + FN = sum(p) + sum(y); loss = mean over channels of 1 - D;
- Tversky (Salehi et al. 2017): T = (TP + s) / (TP + alpha FP + beta FN + s); loss = mean of (1 - T)^gamma
  (gamma = 1: Tversky; the focal Tversky loss of Abraham and Khan 2019 takes gamma = 0.75).
  alpha = beta = 0.5 and s = 0 give Dice.

``form`` says what the sums run over: ``batch`` pools every image of the batch into one sum per
channel (nnU-Net's ``batch_dice``), ``per_image`` scores each image and channel apart and averages.
Under DDP, ``reduce`` sums the batch's soft counts (or per_image's sum and count of scores) over the
processes: the loss is the global batch's.

Empty channels (the rule, pinned by tests): a channel with no positive pixel in what is summed
(the batch, or the image for per_image) is kept in the mean. Its Dice is s / (sum(p) + s), so with
s > 0 its loss sum(p) / (sum(p) + s) pushes the predicted probabilities of that channel down, with a
gradient that is not zero but small once sum(p) >> s (d loss / d p_i = s / (sum(p) + s)^2). With s = 0
an empty channel scores 0 whatever is predicted: loss 1, gradient 0 (the denominator is clamped at
1e-7, so nothing predicted gives 0, not 0/0). smp's DiceLoss instead gives such a channel zero loss
and zero gradient. With per_image, an image with no valid pixel at all is left out of the mean.
"""

from __future__ import annotations

import torch

from seg.losses.bce import Reduce

FORMS = ("batch", "per_image")


def scored_mean(losses: torch.Tensor, valid: torch.Tensor | None, reduce: Reduce | None = None) -> torch.Tensor:
    """Mean of (C,) or (B, C) ``losses``; for (B, C), over the images with at least one valid pixel (with
    ``reduce``: over every process's images)."""
    if losses.dim() == 1:
        return losses.mean()
    if valid is None:
        valid = torch.ones_like(losses[:, :1, None, None], dtype=torch.bool)
    scored = (valid.flatten(1).any(dim=1)).to(losses.dtype)[:, None].expand_as(losses)
    total, count = (losses * scored).sum(), scored.sum()
    if reduce is not None:
        total, count = reduce(torch.stack([total, count])).unbind()
    return total / count.clamp(min=1.0)


def soft_counts(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    form: str,
    reduce: Reduce | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(TP, FP, FN) soft counts: (C,) for form ``batch`` (with ``reduce``: summed over the processes),
    (B, C) for ``per_image``; float32."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    probs = torch.sigmoid(logits.float())
    target = target.to(probs.dtype)
    mask = torch.ones_like(probs[:, :1]) if valid is None else valid.to(probs.dtype)
    p, y = probs * mask, target * mask
    dims = (0, 2, 3) if form == "batch" else (2, 3)
    tp, p_sum, y_sum = (p * y).sum(dim=dims), p.sum(dim=dims), y.sum(dim=dims)
    if reduce is not None and form == "batch":
        tp, p_sum, y_sum = reduce(torch.stack([tp, p_sum, y_sum])).unbind()
    return tp, p_sum - tp, y_sum - tp


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    form: str = "batch",
    smooth: float = 1.0,
    reduce: Reduce | None = None,
) -> torch.Tensor:
    """1 - soft Dice, averaged over channels (and images for per_image); () tensor."""
    tp, fp, fn = soft_counts(logits, target, valid, form, reduce)
    dice = (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth).clamp(min=1e-7)
    return scored_mean(1.0 - dice, valid, reduce)


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 1.0,
    form: str = "batch",
    smooth: float = 1.0,
    reduce: Reduce | None = None,
) -> torch.Tensor:
    """Mean of (1 - Tversky index)^gamma over channels (and images for per_image); () tensor.

    alpha weighs false positives, beta false negatives (beta > alpha favours recall)."""
    tp, fp, fn = soft_counts(logits, target, valid, form, reduce)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp(min=1e-7)
    return scored_mean((1.0 - index).clamp(min=1e-12) ** gamma, valid, reduce)
