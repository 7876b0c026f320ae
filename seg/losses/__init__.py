"""Loss terms over seg's ``valid`` mask, and the criterion that sums them (:mod:`seg.losses.criterion`)."""

from seg.losses.bce import APPLY_AS, WeightSums, weighted_bce
from seg.losses.criterion import Criterion
from seg.losses.lovasz import lovasz_hinge
from seg.losses.region import soft_dice_loss, tversky_loss

__all__ = ["APPLY_AS", "Criterion", "WeightSums", "lovasz_hinge", "soft_dice_loss", "tversky_loss", "weighted_bce"]
