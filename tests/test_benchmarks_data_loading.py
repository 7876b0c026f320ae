"""Tests for seg/benchmarks/data_loading.py at tiny sizes: the table (the judged default loader against the
model step, the other loaders and the end-to-end rows for information) and the agreements: the same batches at
num_workers 0, 1 and 2, and border maps read back from the disk cache equal to the computed ones. Timings are
never checked."""

import re

from benchmark_tables import table_rows

from seg.benchmarks import data_loading


def test_tiny_run_judges_the_default_loader_and_the_loaders_agree():
    lines = data_loading.run("tiny")
    rows = table_rows(lines)
    assert [cells[0] for cells in rows] == [
        "loader, num_workers 0",
        "loader, num_workers 1",
        "loader, num_workers 2",
        "loader, data.sampling foreground",
        "loader, border_map, first epoch (cold cache)",
        "loader, border_map, later epoch (warm cache)",
        "model, 64 px crops (train_one_epoch over the epoch's batches, loaded before)",
        "end to end (loader + model), num_workers 0, 1 thread",
        "end to end (loader + model), num_workers 1, 1 thread",
        "end to end (loader + model), num_workers 2, 1 thread",
    ]
    judged = [cells for cells in rows if cells[4]]
    assert [(cells[0], cells[4]) for cells in judged] == [("loader, num_workers 0", ">= 1x")]
    assert all(cells[3].endswith("x model") for cells in rows if not cells[0].startswith("model, "))
    assert all(cells[1].endswith(" images/s") for cells in rows)
    assert "num_workers: yes, border_map: yes." in lines[0]
    assert re.search(r"Fastest end to end: on 1 thread\(s\): num_workers [012]\.", lines[0])
