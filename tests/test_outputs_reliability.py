"""Tests for seg/outputs/reliability.py: the reliability diagram PNG."""

import torch

from seg.outputs.reliability import plot_reliability
from seg.scoring.calibration import calibration_sums, reliability_table


def test_plot_reliability_writes_a_png(tmp_path):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, 32, 32, generator=g) * 2 + 1.5
    target = (torch.rand(4, 3, 32, 32, generator=g) < torch.sigmoid(logits - 1.5)).float()
    curves = {
        "raw": reliability_table(calibration_sums(logits, target, None)),
        "prior_corrected": reliability_table(calibration_sums(logits, target, None, 1.5)),
    }
    path = plot_reliability(curves, ["road", "car", "pole"], tmp_path / "plots" / "reliability.png", title="val")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
