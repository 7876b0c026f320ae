"""Tests for seg/benchmarks/validation.py at tiny sizes: the table (per channel count a plain forward row and
the judged validation pass; the structure metrics row for information) and the agreement of the per-batch
statistics, worked through in parts, with the whole-batch functions. Timings are never checked."""

from benchmark_tables import table_rows

from seg.benchmarks import validation


def test_tiny_run_judges_the_validation_pass_per_channel_count_and_the_statistics_agree():
    lines = validation.run("tiny")
    rows = table_rows(lines)
    where = "1 x 200x300 (padded 224x320)"
    assert [cells[0] for cells in rows] == [
        f"{where}, C = 1: plain forward",
        f"{where}, C = 1: validation pass",
        f"{where}, C = 1: last epoch's pass, metrics.structure [rand, vi, object_ap]",
        f"{where}, C = 5: plain forward",
        f"{where}, C = 5: validation pass",
        f"{where}, C = 5: validation pass of a weighted run (q_eff = 3)",
    ]
    judged = [cells for cells in rows if cells[4]]
    assert [cells[0].split(": ")[1] for cells in judged] == ["validation pass"] * 2
    assert all(cells[4] == ">= 0.9x" and cells[3].endswith("x plain") for cells in judged)
    assert all(cells[1].endswith(" images/s") for cells in rows)
    assert "equal the whole-batch functions bit for bit: yes." in lines[0]
    assert all(cells[3].endswith("x plain") for cells in rows if not cells[0].endswith("plain forward"))
