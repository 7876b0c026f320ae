"""Tests for seg/outputs/tables.py: the one Markdown table helper, and the results table of a val block."""

import torch

from seg.outputs.tables import markdown_table, print_results, results_table
from seg.results import Scores
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


def test_results_table_rows_columns_and_values():
    val = small_val()
    text = results_table(val, NAMES, "run: val")
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


def test_markdown_table_lines():
    assert markdown_table(["strategy", "n"], [["none", 3], ["global", ""]]) == [
        "| strategy | n |",
        "|---|---|",
        "| none | 3 |",
        "| global |  |",
    ]


def test_results_table_reads_a_typed_val_block_as_its_dict():
    val = small_val()
    assert results_table(Scores.from_dict(val), NAMES, "t") == results_table(val, NAMES, "t")


def test_print_results_prints_the_weights_epochs_and_the_table(capsys):
    summary = {
        "best_epoch": 1,
        "epochs_completed": 2,
        "weighting": "global",
        "apply_as": "pos_weight",
        "normalize": True,
        "negatives": "pixels",
        "pos_weight": 3.0,
        "effective_pos_weight": [3.0, 12.345],
        "mean_applied_weight": 1.5,
        "val": small_val(),
        "train": {"loss": 0.5, "dice": 0.4},
        "wall_time_per_epoch_s": 1.0,
        "stats_source": "training split",
    }
    print_results(summary, NAMES)
    out = capsys.readouterr().out
    assert "weighting: global   effective pos_weight: 3, 12.3   epochs: 2 (best.pt: epoch 1)" in out
    assert results_table(summary["val"], NAMES) in out
