"""Tests for seg/results.py: committed and fresh summary.json and eval-<split>.json round trip exactly
(key order included); a missing or unknown key is refused with the file and the key named."""

import json

import pytest
from conftest import REPO

from seg.apps import audit as audit_app
from seg.apps import train as train_app
from seg.cli import run_main
from seg.errors import ConfigError
from seg.results import EvalResult, RunSummary, Scores
from seg.run_evaluation import evaluate_run

RECORDS = sorted((REPO / "experiments" / "results").glob("*/runs/*.json"))
COMMITTED = [p for p in RECORDS if ".eval-" not in p.name]  # summaries
EVALUATIONS = [p for p in RECORDS if ".eval-" in p.name]  # runs/<run>.eval-test.json


def same_json(record, data) -> None:
    """``to_dict`` gives back the file's content exactly: equal, and equal as text (key order)."""
    assert record.to_dict() == data
    assert json.dumps(record.to_dict(), indent=2) == json.dumps(data, indent=2)


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_run_summaries_round_trip(path):
    """Summaries written by older versions of seg (no lr_schedule) load, and come back byte for byte."""
    summary = RunSummary.read(path)
    same_json(summary, json.loads(path.read_text()))
    assert json.dumps(summary.to_dict(), indent=2).encode() == path.read_bytes().removesuffix(b"\n")
    data = json.loads(path.read_text())
    assert (summary.lr_schedule is None) == ("lr_schedule" not in data) and summary.provenance is not None
    assert set(summary.val.by_threshold) == {"0.5", "prior_corrected", "tuned"}
    assert summary.val.by_threshold["tuned"].note and summary.val.note is None


@pytest.mark.parametrize("path", EVALUATIONS, ids=[p.stem for p in EVALUATIONS])
def test_committed_evaluations_round_trip(path):
    """The comparison's test-split evaluations load and come back byte for byte; thresholds came from val."""
    record = EvalResult.read(path)
    assert json.dumps(record.to_dict(), indent=2).encode() == path.read_bytes().removesuffix(b"\n")
    assert record.split == "test" and record.chosen_on is not None and record.chosen_on.split == "val"
    assert record.metrics.by_threshold["tuned"].thresholds == record.chosen_on.thresholds


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory, synthetic_root):
    """A tiny class_map run weighted from an audit's stats file (so every optional key is written), evaluated."""
    tmp = tmp_path_factory.mktemp("fresh")
    config = str(REPO / "configs" / "synthetic.yaml")
    audit = ["--config", config, "--set", f"data.root={synthetic_root}", "--out", str(tmp / "audit")]
    audit += ["--workers", "1", "--no-progress"]
    assert run_main(audit_app.main, audit) == 0
    train = [
        "--config",
        config,
        f"run.out_dir={tmp}",
        f"data.root={synthetic_root}",
        "train.epochs=1",
        "train.max_steps_per_epoch=1",
        "train.batch_size=2",
        "data.image_size=64",
        "data.max_val_images=2",
        "loss.weighting=class_map",
        "loss.apply_as=weight",
        f"loss.stats_file={tmp / 'audit' / 'mask_stats.json'}",
        "logging.wandb.mode=disabled",
        "logging.wandb.log_images=0",
        "--no-progress",
    ]
    assert run_main(train_app.main, train) == 0
    run = tmp / "synthetic"
    evaluate_run(run, "val", overlays=0, wandb_mode="disabled", progress=False)
    return run


def test_a_fresh_summary_round_trips_with_every_optional_key(fresh_run):
    path = fresh_run / "summary.json"
    data = json.loads(path.read_text())
    summary = RunSummary.from_dict(data)
    same_json(summary, data)
    assert path.read_text() == json.dumps(summary.to_dict(), indent=2) + "\n"
    assert summary.lr_schedule and summary.lr_schedule[0].epochs == [0, 1]
    assert summary.stats_sha256 and summary.class_weights and summary.weight_map_stats
    assert set(summary.weight_map_stats) == set(summary.val.per_channel)
    assert summary.provenance is not None and summary.provenance.command.startswith("python")


def test_a_fresh_evaluation_round_trips(fresh_run):
    path = fresh_run / "eval-val.json"
    result = EvalResult.read(path)
    same_json(result, json.loads(path.read_text()))
    assert result.split == "val" and isinstance(result.metrics, Scores)
    assert result.metrics.by_threshold["0.5"].per_channel.keys() == result.metrics.per_channel.keys()


def test_a_missing_key_is_refused_naming_the_file_and_the_key(tmp_path):
    data = json.loads(COMMITTED[0].read_text())
    del data["val"]["by_threshold"]["tuned"]["micro"]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=rf"^{path}: missing key 'val.by_threshold.tuned.micro' \(ScoreBlock\)$"):
        RunSummary.read(path)
    data = json.loads(COMMITTED[0].read_text())
    del data["epochs_completed"], data["val"]
    with pytest.raises(ConfigError, match=r"^RunSummary: missing keys 'epochs_completed', 'val' \(RunSummary\)$"):
        RunSummary.from_dict(data)


def test_unknown_keys_and_wrong_shapes_are_refused(tmp_path):
    data = json.loads(COMMITTED[0].read_text())
    data["val"]["ece"]["bins_used"] = 15
    with pytest.raises(ConfigError, match=r"^x.json: unknown key 'val.ece.bins_used' \(not in Calibration\)$"):
        RunSummary.from_dict(data, "x.json")
    data = json.loads(COMMITTED[0].read_text())
    data["val"]["by_threshold"]["0.5"] = 0.5
    with pytest.raises(ConfigError, match=r"key 'val.by_threshold.0.5': expected an object \(ScoreBlock\), got float"):
        RunSummary.from_dict(data)
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match=rf"^{path}: not a readable JSON file"):
        RunSummary.read(path)


def test_a_strategy_may_report_keys_of_its_own_and_they_are_written_last():
    # A strategy added to the registry may report keys RunSummary does not declare: kept, after the others.
    data = json.loads(COMMITTED[0].read_text()) | {"toy_channels": ["a", "b"]}
    summary = RunSummary.from_dict(data)
    assert summary.extra == {"toy_channels": ["a", "b"]}
    assert list(summary.to_dict())[-1] == "toy_channels" and summary.to_dict() == data
    data.pop("toy_channels")
    assert RunSummary.from_dict(data).extra == {} and "extra" not in RunSummary.from_dict(data).to_dict()
