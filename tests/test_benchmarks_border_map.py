"""Tests for seg/benchmarks/border_map.py at the tiny size: the table's structure and the agreement row.

Timings on a shared 2-core machine say nothing at this size, so no PASS/MISS of a speed target is checked:
only that every row is judged (PASS, MISS or (info)) and that the fast map agrees with the naive one.
"""

import pytest

from seg.benchmarks import border_map
from seg.benchmarks.timing import HEADER


def cells(line):
    """The cells of one Markdown table row, stripped."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_tiny_run_prints_the_method_then_one_judged_table():
    lines = border_map.run("tiny")
    assert "One core" in lines[0] and "interleaved" in lines[0] and "Load average" in lines[0]
    assert lines[1] == ""
    assert lines[2:4] == HEADER  # one table, right after the paragraph
    rows = [cells(line) for line in lines[4:]]
    assert all(line.startswith("| ") for line in lines[4:])
    assert all(len(row) == len(cells(HEADER[0])) for row in rows)
    assert all(row[5] in ("PASS", "MISS", "(info)") for row in rows)
    # per instance count (8 and 12 at this size): naive, floor, fast vs naive, fast vs floor; then the agreement
    methods = [row[0] for row in rows]
    assert methods[:4] == [
        "naive (per-instance full-image EDT + sort), 8 instances",
        "two-EDT floor, 8 instances",
        "border_weight_map, 8 instances",
        "border_weight_map vs two-EDT floor, 8 instances",
    ]
    assert [row[4] for row in rows[:8]] == ["", "", ">= 35x", "<= 2x", "", "", ">= 50x", ""]
    assert rows[2][3].endswith("x faster than naive") and rows[3][3].endswith("x floor")
    assert rows[7][5] == "(info)"  # the floor ratio at the second count is for information
    assert len(rows) == 9 and methods[8] == "max abs diff vs naive, each of the 2 images"


def test_tiny_run_fast_agrees_with_naive():
    agreement = cells(border_map.run("tiny")[-1])
    assert agreement[0].startswith("max abs diff vs naive")
    assert agreement[4] == "<= 1e-05" and agreement[5] == "PASS"
    assert float(agreement[1]) <= 1e-5


def test_an_unknown_size_is_refused():
    with pytest.raises(ValueError, match="full, quick, tiny"):
        border_map.run("huge")
