"""Weighting formulas: pure tensor functions of mask counts (the strategies in seg.weighting.strategies use them).

Every per-channel weight has shape (C, 1, 1) so that it broadcasts against the
channel axis of a [B, C, H, W] tensor. A (C,) tensor would broadcast against the
*width* (and silently so when C == W): :func:`check_channel_weight` refuses it.

Nothing here reads the config, touches files or synchronises with the host: the
per-batch functions run inside the training step on the device.
"""

from __future__ import annotations

import torch

from seg.data.counts import NEGATIVES


def check_channel_weight(weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validate a weight for a [B,C,H,W] target; return it unchanged.

    Accepted: a 0-d scalar, a (C,1,1) per-channel weight, or a map that broadcasts
    as [B or 1, C or 1, H, W]. A 1-D (C,) tensor is refused: PyTorch would broadcast
    it against the last axis, the image width, not the channels.
    """
    if target.dim() != 4:
        raise ValueError(f"target must be [B,C,H,W], got shape {tuple(target.shape)}")
    channels = target.shape[1]
    if weight.dim() == 0:
        return weight
    if weight.dim() == 1:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} for a target of shape {tuple(target.shape)}: a 1-D "
            "weight broadcasts against the image width (the last axis), not the channels"
            + (" (silently here, since C == W)" if weight.shape[0] == target.shape[-1] else "")
            + f"; use shape ({channels}, 1, 1), e.g. weight.view(-1, 1, 1)"
        )
    if weight.dim() == 3:
        if tuple(weight.shape) != (channels, 1, 1):
            raise ValueError(f"per-channel weight must have shape ({channels}, 1, 1), got {tuple(weight.shape)}")
        return weight
    if weight.dim() == 4:
        ok = (
            weight.shape[0] in (1, target.shape[0])
            and weight.shape[1] in (1, channels)
            and tuple(weight.shape[2:]) == tuple(target.shape[2:])
        )
        if not ok:
            raise ValueError(f"weight map of shape {tuple(weight.shape)} does not match target {tuple(target.shape)}")
        return weight
    raise ValueError(f"weight of shape {tuple(weight.shape)} cannot weight a target of shape {tuple(target.shape)}")


def ratio_weight(negatives: torch.Tensor, positives: torch.Tensor, clamp: tuple[float, float]) -> torch.Tensor:
    """neg / pos, clamped to [min, max]; a count with no positives takes max (never inf or nan)."""
    negatives, positives = negatives.double(), positives.double()
    ratio = torch.where(positives > 0, negatives / positives.clamp(min=1.0), torch.full_like(negatives, clamp[1]))
    return ratio.clamp(clamp[0], clamp[1]).float()


def negative_counts(
    positive: torch.Tensor, valid: torch.Tensor, all_zero: torch.Tensor, negatives: str
) -> torch.Tensor:
    """Per channel negatives: ``pixels`` = valid - positive_c; ``all_zero`` = pixels where no channel is positive."""
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    if negatives == "pixels":
        return valid - positive
    return all_zero.expand_as(positive)


def global_pos_weight(positive: torch.Tensor, negative: torch.Tensor, clamp: tuple[float, float]) -> torch.Tensor:
    """One scalar pos_weight = sum_c neg_c / sum_c pos_c (all channels pooled). Shape ()."""
    return ratio_weight(negative.sum(), positive.sum(), clamp)


def per_channel_pos_weight(positive: torch.Tensor, negative: torch.Tensor, clamp: tuple[float, float]) -> torch.Tensor:
    """pos_weight_c = neg_c / pos_c from counts of shape (C,). Shape (C, 1, 1)."""
    return ratio_weight(negative, positive, clamp).view(-1, 1, 1)


def batch_counts(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Counts of one batch, on its device, as one (C + 2,) tensor: positives per channel, valid, all-zero.

    target [B,C,H,W] in [0,1] (soft labels count fractionally), valid [B,1,H,W] bool.
    Kept as one tensor so that one all-reduce sums it over DDP ranks.
    """
    valid_f = valid.to(target.dtype)
    positive = (target * valid_f).sum(dim=(0, 2, 3))
    none_positive = (1.0 - target.amax(dim=1, keepdim=True)) * valid_f
    return torch.cat([positive, valid_f.sum().view(1), none_positive.sum().view(1)]).double()


def per_batch_pos_weight(
    counts: torch.Tensor,
    fallback: torch.Tensor,
    negatives: str,
    clamp: tuple[float, float],
    previous: torch.Tensor | None = None,
    ema: float | None = None,
) -> torch.Tensor:
    """pos_weight (C,1,1) from one batch's counts (see :func:`batch_counts`), without host sync.

    A channel with no positives or no negatives in the batch takes ``fallback[c]``
    (the dataset value, (C,1,1)) through ``torch.where``. With ``ema`` (momentum m),
    the result is m * previous + (1 - m) * current.
    """
    positive, valid, all_zero = counts[:-2], counts[-2], counts[-1]
    negative = negative_counts(positive, valid, all_zero, negatives)
    current = (negative / positive.clamp(min=1e-12)).clamp(clamp[0], clamp[1]).float().view(-1, 1, 1)
    defined = ((positive > 0) & (negative > 0)).view(-1, 1, 1)
    current = torch.where(defined, current, fallback.to(current.dtype))
    if ema is None or previous is None:
        return current
    return ema_blend(previous, current, ema)


def ema_blend(previous: torch.Tensor, current: torch.Tensor, ema: float) -> torch.Tensor:
    """The exponential moving average step: ema * previous + (1 - ema) * current."""
    return ema * previous + (1.0 - ema) * current
