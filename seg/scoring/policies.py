"""The threshold policies, named once: what ``metrics.threshold`` may say and ``val.by_threshold`` holds.

- ``0.5``: logit > 0;
- ``prior_corrected``: logit > log q_eff per channel (q_eff the effective pos_weight);
- ``tuned``: per channel, the grid threshold that maximises dataset-level Dice.
"""

from __future__ import annotations

from seg.config.schema import POLICIES  # the names, declared once with the config key they are values of

__all__ = ["FIXED_NOTE", "POLICIES", "POLICY_LABELS", "TUNED_NOTE"]
POLICY_LABELS = {"0.5": "0.5", "prior_corrected": "prior-corrected", "tuned": "tuned on val (optimistic)"}
TUNED_NOTE = "tuned on val (optimistic): thresholds chosen on the images they are scored on"
FIXED_NOTE = "thresholds tuned on another split (given), applied here"
