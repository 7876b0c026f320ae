"""Tests for seg/experiments/plots.py: which plot files are written, at what pixel size, leaving no pyplot figure."""

import matplotlib.pyplot as plt
import pytest
from PIL import Image

from seg.experiments.plots import PLOTS, plot_dice_vs_frequency, write_comparison_plots


def dice(strategy, policy, channel, mean, half, diff=None) -> dict:
    """A Dice row of aggregate() (what the plots read: mean, ci_high, diff_mean, diff_ci_high)."""
    return {
        "strategy": strategy,
        "quantity": "dice",
        "variant": policy,
        "channel": channel,
        "mean": mean,
        "ci_high": mean + half,
        "diff_mean": diff,
        "diff_ci_high": None if diff is None else diff + 0.02,
    }


ROWS = [
    dice("none", "0.5", "cell", 0.9, 0.01),
    dice("none", "0.5", "speck", 0.2, 0.1),
    dice("none", "0.5", "macro", 0.55, 0.05),
    dice("global", "0.5", "cell", 0.85, 0.02, diff=-0.05),
    dice("global", "0.5", "speck", 0.4, 0.1, diff=0.2),
    dice("global", "tuned", "macro", 0.7, 0.03),
]
FRACTIONS = {"cell": 0.35, "speck": 0.004}


def png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_two_channels_write_both_plots(tmp_path):
    figures = plt.get_fignums()
    write_comparison_plots(ROWS, ["none", "global"], ["cell", "speck"], FRACTIONS, tmp_path, "Toy", "none")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PLOTS.values())
    # dpi 100; Dice per channel: 8 x (2.6 * 3 policies + 1) in, since 0.28 * 3 groups * 2 strategies + 2.5 < 8
    assert png_size(tmp_path / PLOTS["dice_per_channel"]) == (800, 880)
    assert png_size(tmp_path / PLOTS["dice_vs_frequency"]) == (1200, 500)  # 12 x 5 in
    assert plt.get_fignums() == figures  # matplotlib Figure objects, not pyplot's: nothing left open


def test_one_channel_writes_only_dice_per_channel(tmp_path):
    write_comparison_plots(ROWS, ["none", "global"], ["cell"], FRACTIONS, tmp_path, "Toy", "none")
    assert [p.name for p in tmp_path.iterdir()] == [PLOTS["dice_per_channel"]]
    assert png_size(tmp_path / PLOTS["dice_per_channel"]) == (600, 420)  # max(6, 0.45 * 3 * 2 + 2) x 4.2 in


@pytest.mark.parametrize("fractions", [{}, {"cell": None, "speck": 0.0}])
def test_dice_vs_frequency_without_known_frequencies_writes_nothing(tmp_path, fractions):
    path = tmp_path / PLOTS["dice_vs_frequency"]
    plot_dice_vs_frequency(ROWS, ["none", "global"], ["cell", "speck"], fractions, path, "Toy", "none")
    assert not path.exists()
