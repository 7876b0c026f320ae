"""The training criterion: the weighting strategy's weight for the batch, then the configured sum of loss terms.

``loss.terms`` lists the terms, each ``{name, weight, ...parameters}`` (:data:`seg.config.schema.LOSS_TERMS`):

- ``bce``: :func:`weighted_bce` with the strategy's weight, ``apply_as`` and ``normalize``;
- ``focal``: the same with the modulating factor (1 - p_t)^gamma; its alpha is the strategy's weight
  (``alpha: null``) or fixed (alpha on positives, 1 - alpha on negatives, with loss.weighting none);
- ``dice``, ``tversky``: region losses over soft counts (:mod:`seg.losses.region`), unweighted;
- ``lovasz``: one Lovász hinge per channel (:mod:`seg.losses.lovasz`), unweighted.

The loss is sum(weight_i * term_i). Every term is a tensor function over ``valid`` with no host
synchronisation. Under DDP, ``reduce`` (:func:`seg.distributed.global_sum`) sums each term's sums over
the processes, so that the loss, on every process, is the global batch's (Lovász ``batch`` excepted).
``last_terms`` holds the unweighted value of each term of the last call (detached, on the device): the
engine adds them up per epoch (``train/loss/<term>`` in metrics.jsonl). The :class:`WeightSums` (effective
pos_weight, mean applied weight) come from the first weighted term; with none, from unit weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from seg.config.schema import LossTerm
from seg.losses.bce import APPLY_AS, Reduce, WeightSums, weight_sums, weighted_bce
from seg.losses.lovasz import lovasz_hinge
from seg.losses.region import soft_dice_loss, tversky_loss

if TYPE_CHECKING:
    from seg.weighting.registry import Strategy

DEFAULT_TERMS = (LossTerm(name="bce", weight=1.0),)


def fixed_alpha_weight(target: torch.Tensor, alpha: float) -> torch.Tensor:
    """Focal's fixed alpha as a per-element weight: alpha on positives, 1 - alpha on negatives."""
    return alpha * target + (1.0 - alpha) * (1.0 - target)


class Criterion(nn.Module):
    """``strategy.batch_weight(batch)``, then the weighted sum of ``terms`` (default: weighted BCE alone).

    The strategy is a submodule: its tensors (fixed weights, class weights, the per_batch EMA
    state) are buffers, so they follow ``.to(device)`` and ``state_dict()`` (what a checkpoint
    saves and a resumed run loads back).
    """

    def __init__(
        self,
        strategy: Strategy,
        apply_as: str = "pos_weight",
        normalize: bool = False,
        terms: Sequence[LossTerm] = DEFAULT_TERMS,
        reduce: Reduce | None = None,
    ) -> None:
        super().__init__()
        if apply_as not in APPLY_AS:
            raise ValueError(f"apply_as must be one of {APPLY_AS}, got {apply_as!r}")
        self.strategy = strategy
        self.apply_as = apply_as
        self.normalize = normalize
        self.terms = tuple(terms)
        self._term_parameters = [term.parameters() for term in self.terms]  # defaults filled in once, not per step
        self.last_terms: torch.Tensor | None = None
        self.reduce = reduce

    @property
    def term_names(self) -> list[str]:
        return [term.name for term in self.terms]

    def forward(self, logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, WeightSums, torch.Tensor | None]:
        """(loss (), WeightSums, the weight applied) for [B,C,H,W] logits and a batch with
        ``target`` [B,C,H,W], ``valid`` [B,1,H,W] and whatever the strategy reads (``weight_map``)."""
        weight = self.strategy.batch_weight(batch)
        target, valid = batch["target"], batch["valid"]
        total: torch.Tensor | None = None
        sums: WeightSums | None = None
        values = []
        for term, params in zip(self.terms, self._term_parameters, strict=True):
            value, term_sums = self._term(term.name, params, logits, target, valid, weight)
            sums = sums if sums is not None else term_sums
            total = term.weight * value if total is None else total + term.weight * value
            values.append(value.detach())
        if sums is None:  # no weighted term: unit weights
            unit = torch.ones((), device=logits.device)
            sums = weight_sums(target.float(), valid.float(), unit, unit)
        assert total is not None  # the schema refuses an empty loss.terms
        self.last_terms = torch.stack(values)
        return total, sums, weight

    def _term(
        self,
        name: str,
        params: dict,
        logits: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor,
        weight: torch.Tensor | None,
    ) -> tuple[torch.Tensor, WeightSums | None]:
        reduce = self.reduce
        if name == "bce":
            return weighted_bce(logits, target, valid, weight, self.apply_as, self.normalize, reduce=reduce)
        if name == "focal":
            gamma = params["gamma"]
            if params["alpha"] is not None:
                alpha = fixed_alpha_weight(target.float(), params["alpha"])
                return weighted_bce(logits, target, valid, alpha, "weight", self.normalize, gamma, reduce)
            return weighted_bce(logits, target, valid, weight, self.apply_as, self.normalize, gamma, reduce)
        if name == "dice":
            return soft_dice_loss(logits, target, valid, params["form"], params["smooth"], reduce), None
        if name == "tversky":
            loss = tversky_loss(
                logits,
                target,
                valid,
                params["alpha"],
                params["beta"],
                params["gamma"],
                params["form"],
                params["smooth"],
                reduce,
            )
            return loss, None
        if name == "lovasz":  # training targets are 0/1 by construction: no per-step label check (a sync)
            return lovasz_hinge(logits, target, valid, params["form"], check_labels=False, reduce=reduce), None
        raise ValueError(f"unknown loss term {name!r}")
