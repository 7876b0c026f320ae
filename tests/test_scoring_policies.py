"""Tests for seg/scoring/policies.py: the policy names are the config schema's, and every policy has its label."""

from seg.config import schema
from seg.scoring import policies


def test_the_names_are_the_config_schemas():
    assert policies.POLICIES is schema.POLICIES  # declared once
    # what metrics.threshold accepts, and nothing else: tests/test_config_schema.py
    assert policies.POLICIES == ("0.5", "prior_corrected", "tuned")


def test_every_policy_has_a_label():
    assert list(policies.POLICY_LABELS) == list(policies.POLICIES)  # every policy, in the same order, no other
    assert policies.POLICY_LABELS == {
        "0.5": "0.5",
        "prior_corrected": "prior-corrected",
        "tuned": "tuned on val (optimistic)",
    }
    assert policies.TUNED_NOTE.startswith(policies.POLICY_LABELS["tuned"])  # the note names the label
    assert sorted(policies.__all__) == ["FIXED_NOTE", "POLICIES", "POLICY_LABELS", "TUNED_NOTE"]
