"""Tests for seg/tracking.py: metrics.jsonl (strict JSON, truncation on resume) and the W&B Tracker
(disabled: every call a no-op; offline: what it logs is read back from the run file independently:
step metrics, job type and group, overlays of index and multi-label masks padded to one size, model
artifact versions with metadata, the checkpoint an evaluation used; a failing W&B call warns once and
never raises)."""

import hashlib
import json
import logging
import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from wandb_records import artifacts, config_values, history_rows, metric_definitions, run_info, summary_values

from seg.tracking import (
    RUN_ID_FILE,
    Tracker,
    append_metrics,
    common_size,
    label_map,
    overlay_masks,
    read_metrics,
    truncate_metrics,
)


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


def test_label_map_is_one_plus_the_channel_set_and_zero_where_none_is():
    channels = np.zeros((2, 3, 4), np.uint8)
    channels[0, 0, 0] = channels[0, 1, 3] = channels[1, 2, 1] = 1
    assert label_map(channels).tolist() == [[1, 4, 0], [0, 0, 2]]
    assert label_map(np.zeros((1, 1, 300), np.uint8)).dtype == np.uint16  # more labels than uint8 holds


def test_common_size_pads_images_and_masks_at_the_bottom_right():
    images = [np.full((2, 3, 3), 7, np.uint8), np.full((4, 1, 3), 9, np.uint8)]
    masks = [np.ones((2, 3, 1), np.uint8), np.ones((4, 1, 1), np.uint8)]
    padded, (padded_masks,) = common_size(images, [masks])
    assert [im.shape for im in padded] == [(4, 3, 3), (4, 3, 3)] and [m.shape for m in padded_masks] == [(4, 3, 1)] * 2
    assert padded[0][:2, :3].min() == 7 and padded[0][2:].max() == 0 and padded[1][:, 1:].max() == 0
    assert padded_masks[1][:, 0].min() == 1 and padded_masks[1][:, 1:].max() == 0


def test_multilabel_masks_get_one_pair_per_channel():
    truth = np.zeros((2, 2, 2), np.uint8)
    truth[0, 0] = 1  # both channels: overlapping labels
    masks = overlay_masks(truth, truth, ["a", "b"], index=False)
    assert set(masks) == {"pred/a", "truth/a", "pred/b", "truth/b"}
    assert masks["truth/b"]["class_labels"] == {0: "background", 1: "b"}
    assert masks["truth/b"]["mask_data"].tolist() == [[1, 0], [0, 0]]


def test_training_metrics_use_epoch_and_step_and_keep_the_best_dice(tmp_path):
    tracker = Tracker(tmp_path, "offline", "seg-tests", "synthetic", "run", {})
    tracker.define_training_metrics()
    for epoch, dice in ((1, 0.3), (2, 0.6), (3, 0.5)):
        tracker.log({"trainer/step": 10 * epoch, "step/loss": 1.0 / epoch})
        tracker.log({"epoch": epoch, "val/dice": dice, "train/loss": 1.0})
    tracker.finish()
    definitions = metric_definitions(tmp_path)
    assert definitions["val/*"]["step_metric"] == "epoch" and definitions["train/*"]["step_metric"] == "epoch"
    assert definitions["step/*"]["step_metric"] == "trainer/step"
    assert definitions["val/dice"] == {"step_metric": "epoch", "summary": ["max"]}
    assert summary_values(tmp_path)["val/dice"] == {"max": 0.6}  # the best epoch's, not the last
    assert [row["epoch"] for row in history_rows(tmp_path) if "epoch" in row] == [1, 2, 3]
    assert run_info(tmp_path) == {"name": "run", "group": "synthetic", "job_type": "train", "tags": []}


def test_index_masks_log_one_labelled_pair_and_mixed_sizes_are_padded_without_warning(tmp_path, caplog):
    images = [np.full((10, 12, 3), 50, np.uint8), np.full((8, 8, 3), 90, np.uint8)]
    truths = [np.zeros((10, 12, 11), np.uint8), np.zeros((8, 8, 11), np.uint8)]
    truths[0][0, 0, 10] = truths[1][1, 1, 2] = 1  # class 11 of 11 (CamVid's bicyclist) and class 3
    tracker = Tracker(tmp_path, "offline", "seg-tests", None, "run", {}, job_type="eval")
    with caplog.at_level(logging.WARNING):
        tracker.log_overlays("val/examples", images, truths, truths, [f"c{i}" for i in range(11)], index=True)
    tracker.finish()
    assert "sizes do not match" not in caplog.text
    (row,) = [row for row in history_rows(tmp_path) if "val/examples/all_masks" in row]
    assert (row["val/examples/width"], row["val/examples/height"]) == (12, 10)
    assert [set(masks) for masks in row["val/examples/all_masks"]] == [{"predictions", "ground_truth"}] * 2
    files = tmp_path.glob("wandb/offline-run-*/files")
    folder = next(files)
    truth_masks = [
        cv2.imread(str(folder / m["ground_truth"]["path"]), cv2.IMREAD_UNCHANGED) for m in row["val/examples/all_masks"]
    ]
    assert [m.shape for m in truth_masks] == [(10, 12), (10, 12)]
    assert truth_masks[0][0, 0] == 11 and truth_masks[1][1, 1] == 3 and truth_masks[1][8:].max() == 0
    labels = config_values(tmp_path)["_wandb"]["mask/class_labels"]
    assert labels["val/examples_wandb_delimeter_ground_truth"]["value"] == {"0": "none"} | {
        str(i + 1): f"c{i}" for i in range(11)
    }
    assert run_info(tmp_path)["job_type"] == "eval"


def test_checkpoints_are_versions_of_one_model_artifact_with_metadata(tmp_path):
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    best.write_bytes(b"best weights")
    last.write_bytes(b"last weights and optimizer")
    tracker = Tracker(tmp_path, "offline", "seg-tests", None, "run", {})
    tracker.log_model(
        "run-model", {"best.pt": (best, ["best"], {"epoch": 2}), "last.pt": (last, ["latest"], {"epoch": 3})}
    )
    tracker.use_model("run-model:best", best)  # offline: recorded in the config, no use_artifact
    tracker.finish()
    logged = artifacts(tmp_path)
    assert [(a["name"], a["type"], a["files"]) for a in logged] == [
        ("run-model", "model", ["best.pt"]),
        ("run-model", "model", ["last.pt"]),
    ]
    assert "best" in logged[0]["aliases"] and "latest" in logged[1]["aliases"] and "best" not in logged[1]["aliases"]
    assert logged[0]["metadata"] == {
        "epoch": 2,
        "file": "best.pt",
        "sha256": hashlib.sha256(b"best weights").hexdigest(),
    }
    assert logged[1]["metadata"]["epoch"] == 3
    assert config_values(tmp_path)["checkpoint"] == {
        "artifact": "run-model:best",
        "sha256": hashlib.sha256(b"best weights").hexdigest(),
    }


def test_image_files_and_tables_are_logged(tmp_path):
    plot = tmp_path / "plot.png"
    cv2.imwrite(str(plot), np.zeros((5, 6, 3), np.uint8))
    tracker = Tracker(tmp_path, "offline", "seg-tests", None, "run", {}, job_type="compare")
    tracker.log_image_files({"comparison/plot": plot, "comparison/absent": tmp_path / "absent.png"})
    tracker.log_table("comparison/runs", ["strategy", "seed"], [["none", 0], ["global", 0]])
    tracker.finish()
    rows = history_rows(tmp_path)
    assert any(row.get("comparison/plot/_type") == "image-file" for row in rows)
    assert not any(key.startswith("comparison/absent") for row in rows for key in row)
    (table,) = tmp_path.glob("wandb/offline-run-*/files/media/table/comparison/runs_*.table.json")
    assert json.loads(table.read_text())["data"] == [["none", 0], ["global", 0]]


def test_online_evaluation_uses_the_model_artifact(tmp_path):
    """Online, use_model calls use_artifact (the lineage); tested on a stand-in run (no network in tests)."""
    best = tmp_path / "best.pt"
    best.write_bytes(b"best weights")
    calls = []

    class OnlineRun:
        config = SimpleNamespace(update=lambda values: calls.append(("config", values)))

        def use_artifact(self, reference):
            calls.append(("use_artifact", reference))

    tracker = Tracker(tmp_path, "disabled", "seg-tests", None, "run", {})
    tracker.mode, tracker.run = "online", OnlineRun()
    tracker.use_model("run-model:best", best)
    digest = hashlib.sha256(b"best weights").hexdigest()
    assert calls == [
        ("config", {"checkpoint": {"artifact": "run-model:best", "sha256": digest}}),
        ("use_artifact", "run-model:best"),
    ]
