"""Tests for seg/outputs/tables.py: the Markdown table from a val block, and overlay grids pixel by pixel."""

import numpy as np
import torch

from seg.outputs.tables import PALETTE, markdown_table, overlay, overlay_grid, save_overlay_grid
from seg.scoring.validation import Evaluator

NAMES = ["cell", "speck"]


def small_val():
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(3, 2, 8, 8, generator=g) < 0.3).float()
    target[:, 1] = 0  # speck never present: its Dice is undefined under the nan policy
    logits = torch.randn(3, 2, 8, 8, generator=g) + 2 * target - 1.5
    logits[:, 1] = -4
    evaluator = Evaluator(2, "cpu", log_q=torch.tensor([1.0, 2.0]))
    evaluator.update(logits, target)
    return evaluator.compute(NAMES, "prior_corrected")


def test_markdown_table_rows_columns_and_values():
    val = small_val()
    text = markdown_table(val, NAMES, "run: val")
    lines = text.splitlines()
    assert lines[0] == "## run: val"
    header = lines[2]
    assert header.startswith("| channel | Dice @ 0.5 | IoU @ 0.5 | Dice @ prior_corrected")
    assert "Dice @ tuned" in header
    scores = text.split("\n\n")[1]  # the first table: Dice/IoU
    rows = {line.split("|")[1].strip(): line for line in scores.splitlines() if line.startswith("| ")}
    for name in ("cell", "speck", "**macro**", "micro", "per_image"):
        assert name in rows
    cells = [c.strip() for c in rows["cell"].split("|")[2:-1]]
    assert cells[0] == f"{val['by_threshold']['0.5']['per_channel']['cell']['dice']:.4f}"
    assert cells[3] == f"{val['by_threshold']['prior_corrected']['per_channel']['cell']['iou']:.4f}"
    assert rows["speck"].count("–") >= 6  # undefined (null) scores shown as a dash, not 0
    assert f"**{val['by_threshold']['tuned']['dice']:.4f}**" in rows["**macro**"]
    assert "threshold tuned" in text and "ECE raw" in text and "empty-image FP rate @ 0.5" in text
    assert "tuned on val (optimistic)" in text and "Empty policy: nan" in text
    assert "Reported threshold (metrics.threshold): prior_corrected" in text
    # every table row has as many cells as its header
    for table in text.split("\n\n"):
        widths = {line.count("|") for line in table.splitlines() if line.startswith("|")}
        assert len(widths) <= 1, table


def test_overlay_blends_each_channel_in_its_colour():
    image = np.full((2, 2, 3), 100, np.uint8)
    masks = np.zeros((2, 2, 2), np.uint8)
    masks[0, 0, 0] = 1
    masks[1, 1, 1] = 1
    out = overlay(image, masks, alpha=0.5)
    # (0,0): 0.5 * 100 + 0.5 * PALETTE[0] = 50 + (15.5, 59.5, 90) -> rounded half to even
    assert out[0, 0].tolist() == np.rint(0.5 * 100 + 0.5 * PALETTE[0].astype(float)).astype(int).tolist()
    assert out[1, 1].tolist() == np.rint(0.5 * 100 + 0.5 * PALETTE[1].astype(float)).astype(int).tolist()
    assert out[0, 1].tolist() == [100, 100, 100]


def test_overlay_grid_layout_and_padding():
    big, small = np.zeros((4, 6, 3), np.uint8), np.full((2, 3), 7, np.uint8)  # grey accepted
    truth_big = np.ones((4, 6, 1), np.uint8)
    grid = overlay_grid(
        [big, small],
        [truth_big, np.zeros((2, 3, 1), np.uint8)],
        [np.zeros((4, 6, 1), np.uint8), np.zeros((2, 3, 1), np.uint8)],
        gap=2,
    )
    # 2 rows of height 4 + one gap of 2; 3 columns of width 6 + two gaps of 2
    assert grid.shape == (10, 22, 3) and grid.dtype == np.uint8
    assert grid[0, 0].tolist() == [0, 0, 0]  # row 0, image
    assert grid[0, 8].tolist() == np.rint(0.5 * PALETTE[0]).astype(int).tolist()  # row 0, truth overlay
    assert grid[0, 16].tolist() == [0, 0, 0]  # row 0, empty prediction
    assert grid[0, 6].tolist() == [255, 255, 255]  # gap
    assert grid[6, 0].tolist() == [7, 7, 7] and grid[9, 5].tolist() == [255, 255, 255]  # small image, padded


def test_save_overlay_grid_png(tmp_path):
    grid = overlay_grid(
        [np.zeros((8, 8, 3), np.uint8)], [np.ones((8, 8, 2), np.uint8)], [np.zeros((8, 8, 2), np.uint8)]
    )
    path = save_overlay_grid(grid, NAMES, tmp_path / "grid.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
