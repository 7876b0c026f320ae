"""Tests for seg/benchmarks/metrics.py: the table of run("tiny") (a result on every row, the one-threshold
update judged against its target) and the count check. Timings are never checked."""

from seg.benchmarks import metrics, timing


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of each row after the paragraph and timing.HEADER; PASS or MISS where a target is given."""
    paragraph, blank, *table = lines
    assert paragraph and blank == "" and table[:2] == timing.HEADER
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table[2:]]
    for cells in rows:
        assert len(cells) == 6, cells
        assert cells[5] in (("PASS", "MISS") if cells[4] else ("(info)",)), cells
    return rows


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
