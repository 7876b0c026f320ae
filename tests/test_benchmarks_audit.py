"""Tests for seg/benchmarks/audit.py at tiny sizes: the table (a result on every row, the two judged rows
with their targets) and the agreement of the 2-worker audit with the serial one. Timings are never checked."""

from benchmark_tables import table_rows

from seg.benchmarks import audit


def test_tiny_run_judges_the_serial_audit_and_the_two_workers_and_they_agree():
    lines = audit.run("tiny")
    rows = table_rows(lines)
    assert [cells[0] for cells in rows] == [
        "cv2.imread alone, serial (binary 0/255)",
        "audit, no objects, serial",
        "audit, no objects, 2 workers",
        "audit with object statistics, serial",
        "cv2.imread alone, serial (index, 12 values)",
        "audit of index masks, serial",
    ]
    assert [cells[4] for cells in rows if cells[4]] == [">= 0.85x", ">= 1.3x"]
    assert rows[1][3].endswith("x imread") and rows[2][3].endswith("x serial audit")
    assert all(cells[1].endswith(" masks/s") for cells in rows)
    assert lines[0].startswith("20 generated 512x512 PNG masks")
    assert "Agreement (the 2-worker audit counts what the serial one counts): yes." in lines[0]
