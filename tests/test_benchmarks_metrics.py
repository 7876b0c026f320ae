"""Tests for seg/benchmarks/metrics.py: the table of run("tiny") (a result on every row, the one-threshold
update judged against its target) and the count check. Timings are never checked."""

from benchmark_tables import table_rows

from seg.benchmarks import metrics


def test_tiny_run_has_the_step_the_judged_update_and_the_validation_update_per_channel_count():
    rows = metrics.run("tiny")
    methods = [cells[0] for cells in table_rows(rows)]
    assert methods == [
        f"{what}, C={channels}"
        for channels in metrics.CHANNELS
        for what in ("training step", "metric update, one threshold", "validation update, all thresholds + ECE")
    ]
    judged = [cells for cells in table_rows(rows) if cells[4]]
    assert [cells[4] for cells in judged] == ["<= 2%", "<= 2%"]
    # measure raises unless tp + fp + fn + tn of each channel is (updates x valid pixels): every run checks it
    assert "the running count holds every valid pixel once per update" in rows[0]
