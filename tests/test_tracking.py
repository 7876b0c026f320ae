"""Tests for seg/tracking.py: metrics.jsonl (strict JSON, truncation on resume) and the W&B Tracker
(disabled: every call a no-op; offline: what it logs is read back from the run file independently;
a failing W&B call warns once and never raises)."""

import json
import math

import pytest
from wandb_records import config_values, history_rows, summary_values

from seg.tracking import RUN_ID_FILE, Tracker, append_metrics, read_metrics, truncate_metrics


def test_metrics_jsonl_is_strict_json_and_truncates_to_an_epoch(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for epoch in (1, 2, 3):
        append_metrics(path, {"epoch": epoch, "val/dice": 0.5 * epoch, "val/iou": math.nan})
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"epoch": 1, "val/dice": 0.5, "val/iou": None}  # NaN written as null
    assert "NaN" not in path.read_text()
    truncate_metrics(path, 2)  # a run resumed from epoch 2 rewrites what came after
    assert [row["epoch"] for row in read_metrics(path)] == [1, 2]
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_disabled_tracker_writes_nothing(tmp_path):
    tracker = Tracker(tmp_path, "disabled", "seg", None, "run", {"a": 1})
    assert tracker.run is None
    tracker.log({"x": 1.0}, step=1)
    tracker.log_table("t", ["a"], [[1]])
    tracker.summary({"x": 1.0})
    tracker.finish()
    assert list(tmp_path.iterdir()) == []


def test_offline_tracker_writes_what_is_read_back(tmp_path):
    tracker = Tracker(tmp_path, "offline", "seg-tests", "group", "run", {"loss": {"weighting": "none"}}, tags=["none"])
    assert tracker.run is not None
    run_id = (tmp_path / RUN_ID_FILE).read_text()
    tracker.log({"val/dice": 0.25, "skipped": None}, step=1)
    tracker.log({"val/dice": 0.5}, step=2)
    tracker.summary({"best_epoch": 2})
    tracker.finish()
    assert tracker.run is None
    rows = history_rows(tmp_path)
    assert [row["val/dice"] for row in rows if "val/dice" in row] == [0.25, 0.5]
    assert not any("skipped" in row for row in rows)  # None values are left out
    assert summary_values(tmp_path)["best_epoch"] == 2
    assert config_values(tmp_path)["loss"] == {"weighting": "none"}
    again = Tracker(tmp_path, "offline", "seg-tests", "group", "run", {})  # a resumed run keeps its W&B id
    again.finish()
    assert (tmp_path / RUN_ID_FILE).read_text() == run_id


def test_a_failing_wandb_call_warns_once_and_turns_tracking_off(tmp_path):
    tracker = Tracker(tmp_path, "offline", "seg-tests", None, "run", {})

    class Broken:
        def log(self, *args, **kwargs):
            raise RuntimeError("disk full")

        def finish(self):
            pass

    real = tracker.run
    tracker.run = Broken()
    with pytest.warns(UserWarning, match="W&B logging failed.*disk full"):
        tracker.log({"x": 1.0}, step=1)
    assert tracker.run is None
    tracker.log({"x": 2.0}, step=2)  # off now: no second warning, no error
    real.finish()
