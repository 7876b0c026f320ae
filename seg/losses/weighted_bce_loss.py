"""``WeightedBCELoss``: seg's weighted BCE as an ``nn.Module`` for a training loop of your own.

::

    loss_fn = seg.WeightedBCELoss.from_masks(train_masks, strategy="per_channel")  # neg_c / pos_c, (C,1,1)
    loss = loss_fn(logits, target, valid)  # logits, target [B,C,H,W]; valid [B,1,H,W] bool or None

A ``[C]`` pos_weight weights the channel axis of ``[B,C,H,W]`` logits: it is stored as ``(C,1,1)``.
(``torch.nn.BCEWithLogitsLoss(pos_weight=w)`` with a ``[C]`` tensor broadcasts it against the last
axis, the image width, and silently so when C == W.) The loss is :class:`seg.losses.Criterion` with
one ``bce`` term, i.e. :func:`seg.losses.bce.weighted_bce`: ``apply_as``, ``normalize`` and the
reduction over ``valid`` are the training's. The weight is the buffer ``criterion.strategy.fixed``:
it follows ``.to(device)`` and is in ``state_dict()``. :meth:`WeightedBCELoss.from_masks` computes it
from masks or :class:`~seg.data.counts.MaskCounts` as the ``per_channel`` and ``global`` strategies do.
"""

from __future__ import annotations

import torch
from torch import nn

from seg.data.counts import MaskCounts
from seg.losses.bce import APPLY_AS
from seg.losses.criterion import Criterion
from seg.weighting.formulas import batch_counts, global_pos_weight, per_channel_pos_weight
from seg.weighting.registry import Strategy, count_tensors, warn_empty_channels

DEFAULT_CLAMP = (0.001, 1000.0)  # configs/base.yaml's loss.clamp
FROM_MASKS = ("per_channel", "global")  # the dataset-level strategies from_masks computes


class GivenWeight(Strategy):
    """A fixed pos_weight given by the caller (buffer ``fixed``: None, () or (C,1,1)). Not registered:
    no ``loss.weighting`` name selects it; it is what :class:`WeightedBCELoss` hands its criterion."""

    fixed: torch.Tensor | None

    def __init__(self, weight: torch.Tensor | None) -> None:
        nn.Module.__init__(self)  # no counts, spec or config: Strategy's own arguments do not apply
        self.register_buffer("fixed", weight)

    def batch_weight(self, batch: dict) -> torch.Tensor | None:
        return self.fixed


def channel_weight(pos_weight: float | torch.Tensor | None) -> torch.Tensor | None:
    """None; a float or 0-d tensor -> () float32; a [C] or (C,1,1) tensor -> (C,1,1) float32 (per channel)."""
    if pos_weight is None:
        return None
    weight = torch.as_tensor(pos_weight, dtype=torch.float32).detach().clone()
    if weight.dim() == 0:
        return weight
    if weight.dim() == 1 or (weight.dim() == 3 and tuple(weight.shape[1:]) == (1, 1)):
        return weight.reshape(-1, 1, 1)
    raise ValueError(
        f"pos_weight must be None, a float, a [C] or a (C,1,1) tensor (one weight per channel); "
        f"got shape {tuple(weight.shape)}"
    )


def mask_counts(masks: torch.Tensor, valid: torch.Tensor | None = None) -> MaskCounts:
    """The :class:`MaskCounts` of masks [N,C,H,W] (positive where >= 0.5, e.g. 0/1 or bool) over ``valid``
    ([N,1,H,W] bool, None: every pixel), counted with the training's per-batch counting (``batch_counts``)."""
    if masks.dim() != 4:
        raise ValueError(f"masks must be [N,C,H,W], got shape {tuple(masks.shape)}")
    positive = (masks.float() >= 0.5).float()
    if valid is None:
        valid = torch.ones_like(positive[:, :1], dtype=torch.bool)
    if tuple(valid.shape) != (masks.shape[0], 1, *masks.shape[2:]):
        raise ValueError(f"valid must be [N,1,H,W] for masks {tuple(masks.shape)}, got {tuple(valid.shape)}")
    counts = batch_counts(positive, valid.bool()).round().long().cpu()
    return MaskCounts(
        masks.shape[1],
        positive_pixels=counts[:-2].numpy(),
        valid_pixels=int(counts[-2]),
        total_pixels=masks.shape[0] * masks.shape[2] * masks.shape[3],
        all_zero_pixels=int(counts[-1]),
        images=masks.shape[0],
        images_with_positives=(positive * valid).amax(dim=(2, 3)).sum(dim=0).long().cpu().numpy(),
    )


class WeightedBCELoss(nn.Module):
    """Weighted BCE with logits over [B,C,H,W]: ``forward(logits, target, valid=None) -> ()`` loss.

    pos_weight: None (plain BCE), a float (every channel) or a [C] tensor (one weight per channel,
    on the channel axis). apply_as: ``pos_weight`` (the weight on positives) or ``weight`` (on every
    element). normalize: False divides the summed loss by the valid elements (PyTorch's mean), True by
    the summed applied weights (the loss scale of unweighted BCE). ``valid`` [B,1,H,W] bool leaves
    pixels out (False = ignored).
    """

    def __init__(
        self, pos_weight: float | torch.Tensor | None = None, apply_as: str = "pos_weight", normalize: bool = False
    ) -> None:
        super().__init__()
        if apply_as not in APPLY_AS:
            raise ValueError(f"apply_as must be one of {APPLY_AS}, got {apply_as!r}")
        self.criterion = Criterion(GivenWeight(channel_weight(pos_weight)), apply_as, normalize)

    @property
    def pos_weight(self) -> torch.Tensor | None:
        """The weight applied: None, () or (C,1,1) (the buffer ``criterion.strategy.fixed``)."""
        return self.criterion.strategy.batch_weight({})

    @classmethod
    def from_masks(
        cls,
        masks: torch.Tensor | MaskCounts,
        strategy: str = "per_channel",
        clamp: tuple[float, float] = DEFAULT_CLAMP,
        negatives: str = "pixels",
        valid: torch.Tensor | None = None,
        apply_as: str = "pos_weight",
        normalize: bool = False,
    ) -> WeightedBCELoss:
        """The loss with the dataset-level pos_weight of the training masks, as ``loss.weighting`` computes it.

        masks: the training split's masks [N,C,H,W] (positive where >= 0.5), or their counts (a
        :class:`MaskCounts`, e.g. ``read_mask_stats(...).counts`` of an audit). strategy: ``per_channel``
        (neg_c / pos_c, shape (C,1,1)) or ``global`` (sum_c neg_c / sum_c pos_c, shape ()). clamp: bounds
        of the weight; a channel with no positives takes the maximum (with a warning). negatives:
        ``pixels`` (where the channel is 0) or ``all_zero`` (where no channel is positive). valid: with
        a masks tensor, [N,1,H,W] bool of the pixels to count (None: all).
        """
        if strategy not in FROM_MASKS:
            raise ValueError(f"strategy must be one of {FROM_MASKS}, got {strategy!r}")
        if not 0.0 < clamp[0] <= clamp[1]:
            raise ValueError(f"clamp must be (min, max) with 0 < min <= max, got {clamp}")
        counts = masks if isinstance(masks, MaskCounts) else mask_counts(masks, valid)
        warn_empty_channels(counts, clamp)
        formula = per_channel_pos_weight if strategy == "per_channel" else global_pos_weight
        return cls(formula(*count_tensors(counts, negatives), clamp), apply_as, normalize)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The () loss of [B,C,H,W] logits against targets in [0,1] (soft labels allowed) over ``valid``."""
        loss, _, _ = self.criterion(logits, {"target": target, "valid": valid})
        return loss

    def extra_repr(self) -> str:
        weight = self.pos_weight
        shown = None if weight is None else [round(float(w), 4) for w in weight.flatten()]
        return f"pos_weight={shown}, apply_as={self.criterion.apply_as!r}, normalize={self.criterion.normalize}"
