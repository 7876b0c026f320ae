"""Tests for seg/outputs/reliability.py: the reliability diagram PNG, its legend and styles."""

import torch

import seg.outputs.reliability as reliability
from seg.outputs.reliability import plot_reliability, variant_label, variant_styles
from seg.scoring.calibration import calibration_sums, fit_platt, reliability_table, sample_pixels


def three_variants():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, 32, 32, generator=g) * 2 + 1.5
    target = (torch.rand(4, 3, 32, 32, generator=g) < torch.sigmoid(logits - 1.5)).float()
    a, b = fit_platt(*sample_pixels(logits, target, None, 256, torch.Generator().manual_seed(0)))
    return {
        "raw": reliability_table(calibration_sums(logits, target, None)),
        "prior_corrected": reliability_table(calibration_sums(logits, target, None, 1.5)),
        "platt": reliability_table(calibration_sums(logits, target, None, -b.view(3, 1, 1), scale=a.view(3, 1, 1))),
    }


def test_plot_reliability_writes_a_png_with_three_labelled_variants(tmp_path, monkeypatch):
    figures, save = [], reliability.save_figure

    def keep(fig, path, title=None):  # save as usual, keeping the figure to look at its legends
        figures.append(fig)
        return save(fig, path, title)

    monkeypatch.setattr(reliability, "save_figure", keep)
    path = plot_reliability(three_variants(), ["road", "car", "pole"], tmp_path / "plots" / "reliability.png", "val")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert [ax.get_title() for ax in panels] == ["road", "car", "pole"]
    for ax in panels:
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert labels == ["perfect", "raw", "prior-corrected", "Platt-scaled"]
        lines = {line.get_label(): line for line in ax.get_lines()}
        styles = {(lines[name].get_color(), lines[name].get_marker()) for name in labels[1:]}
        assert len(styles) == 3  # a colour and marker of its own for each variant


def test_variant_labels_and_styles():
    assert [variant_label(n) for n in ("raw", "prior_corrected", "platt", "other")] == [
        "raw",
        "prior-corrected",
        "Platt-scaled",
        "other",
    ]
    # known variants keep their style whatever the order; others do not take a known one
    styles = variant_styles(["platt", "x", "raw"])
    assert styles["platt"] == variant_styles(["raw", "prior_corrected", "platt"])["platt"]
    assert len(set(styles.values())) == 3
