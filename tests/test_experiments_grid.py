"""Tests for seg/experiments/grid.py: a tiny grid end to end, interrupted, resumed, re-aggregated, with --jobs,
and from a fresh checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import seg
from seg import checkpoint
from seg.apps import compare as compare_app
from seg.apps import train as train_app
from seg.cli import run_main
from seg.config import ConfigError
from seg.experiments import grid
from seg.experiments.experiment import load_experiment
from seg.experiments.report import aggregate_directory

TINY = """
title: Tiny comparison
base: configs/synthetic.yaml
set: {loss.normalize: true}
strategies:
  none: {loss.weighting: none}
  per_channel: {loss: {weighting: per_channel, negatives: all_zero}}
seeds: [0, 1]
profiles:
  ci: {train.epochs: 1, train.max_steps_per_epoch: 1, train.batch_size: 2, data.image_size: 64,
       data.max_val_images: 2, logging.wandb.mode: disabled, logging.wandb.log_images: 0}
"""


def test_tiny_grid_resumes_skips_finished_runs_and_reaggregates(tmp_path, monkeypatch):
    experiment_file = tmp_path / "tiny.yaml"
    experiment_file.write_text(TINY)
    experiment = load_experiment(experiment_file)
    runs_dir, results_root = tmp_path / "runs", tmp_path / "results"
    extra = [f"run.out_dir={runs_dir}"]
    real_save, trained = checkpoint.save_atomic, []

    def interrupted_save(state, path):  # runs that train write checkpoints; the third is interrupted before its first
        if path.parent.parent.name not in trained:
            trained.append(path.parent.parent.name)
        if len(trained) == 3:
            raise RuntimeError("simulated interruption")
        real_save(state, path)

    monkeypatch.setattr(checkpoint, "save_atomic", interrupted_save)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        grid.run_experiment(experiment, "ci", extra, results_root=results_root, progress=False)
    assert trained == ["tiny-ci-none-s0", "tiny-ci-none-s1", "tiny-ci-per_channel-s0"]
    finished = {name: (runs_dir / name / "checkpoints" / "last.pt").stat().st_mtime_ns for name in trained[:2]}

    trained.clear()
    results_dir = grid.run_experiment(experiment, "ci", extra, results_root=results_root, progress=False)
    assert trained == ["tiny-ci-per_channel-s0", "tiny-ci-per_channel-s1"]  # finished runs were not retrained
    assert {n: (runs_dir / n / "checkpoints" / "last.pt").stat().st_mtime_ns for n in finished} == finished
    config = yaml.safe_load((runs_dir / "tiny-ci-per_channel-s1" / "config.yaml").read_text())
    assert (config["run"]["seed"], config["loss"]["negatives"], config["logging"]["wandb"]["group"]) == (
        1,
        "all_zero",
        "tiny-ci",  # the W&B group: <experiment>-<profile>
    )
    assert sorted(p.name for p in (results_dir / "runs").iterdir()) == [
        f"{n}.json" for n in ("tiny-ci-none-s0", "tiny-ci-none-s1", "tiny-ci-per_channel-s0", "tiny-ci-per_channel-s1")
    ]

    aggregate_directory(results_dir)
    markdown = (results_dir / "results.md").read_text()
    assert "2 strategies x 2 seeds (0, 1) = 4 runs" in markdown and "tuned on val (optimistic)" in markdown
    assert "no checkpoint or epoch is selected on validation" in markdown and "Student t" in markdown
    assert "--experiment" in markdown and "--aggregate-only" in markdown
    assert "with --jobs 1." in markdown  # how the runs were trained (wall times depend on it)
    for strategy in ("none", "per_channel"):
        assert f"| {strategy} | " in markdown
    csv_rows = (results_dir / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("strategy,split,quantity,variant,channel,n,mean")
    assert {line.split(",")[0] for line in csv_rows[1:]} == {"none", "per_channel"}
    assert any(line.startswith("per_channel,val,dice,0.5,speck,2,") for line in csv_rows)
    assert not any(",test," in line for line in csv_rows)  # no labelled test split: no test rows
    assert (results_dir / "dice_per_channel.png").stat().st_size > 0
    assert (results_dir / "dice_vs_frequency.png").stat().st_size > 0

    # --jobs: each run as python -m seg.apps.train from the working directory (called here in this process);
    # finished runs are skipped
    calls = []

    def fake_subprocess_run(command, stdout, **kwargs):
        calls.append(command)
        assert command[:3] == [sys.executable, "-m", "seg.apps.train"] and kwargs["cwd"] == Path.cwd()
        assert kwargs["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(Path(seg.__file__).resolve().parents[1])
        return type("Done", (), {"returncode": run_main(train_app.main, command[3:])})()

    monkeypatch.setattr(grid.subprocess, "run", fake_subprocess_run)
    grid.run_experiment(experiment, "ci", extra, jobs=2, results_root=results_root, progress=False)
    assert len(calls) == 4 and trained == ["tiny-ci-per_channel-s0", "tiny-ci-per_channel-s1"]

    shutil.rmtree(runs_dir)  # the aggregation needs only the copied summaries and the manifest
    (results_dir / "results.md").unlink()
    assert (
        run_main(
            compare_app.main,
            ["--experiment", str(experiment_file), "--profile", "ci", "--out", str(results_root), "--aggregate-only"],
        )
        == 0
    )
    assert (results_dir / "results.md").read_text() == markdown

    # a fresh checkout has the committed results but no runs/: nothing is retrained
    trained.clear()
    monkeypatch.setattr(grid.subprocess, "run", None)  # no subprocess may start either
    grid.run_experiment(experiment, "ci", extra, results_root=results_root, progress=False)
    grid.run_experiment(experiment, "ci", extra, jobs=2, results_root=results_root, progress=False)
    assert trained == [] and not runs_dir.exists()


NESTED = (
    TINY.replace(
        "set: {loss.normalize: true}",
        """set:
  loss.normalize: true
  data.test_fraction: 0.25           # a generated test split: 12 of the 48 synthetic images
  metrics.structure: [rand, vi, object_ap]
  metrics.objects_from: positive
  metrics.calibration_pixels: 256""",
    )
    .replace("data.max_val_images: 2, ", "")
    .replace("seeds: [0, 1]", "seeds: [0]")
)


def test_nested_evaluation_scores_test_with_choices_made_on_val(tmp_path, monkeypatch):
    """With a labelled test split, every run's final model is scored on it with the thresholds and Platt
    parameters chosen on validation; results.md leads with the test numbers and image statistics."""
    import json

    experiment_file = tmp_path / "nested.yaml"
    experiment_file.write_text(NESTED)
    experiment = load_experiment(experiment_file)
    runs_dir, results_root = tmp_path / "runs", tmp_path / "results"
    results_dir = grid.run_experiment(
        experiment, "ci", [f"run.out_dir={runs_dir}"], results_root=results_root, progress=False
    )
    manifest = json.loads((results_dir / "experiment.json").read_text())
    assert manifest["test"]["num_images"] == 12 and "carved" in manifest["test"]["source"]
    for name in ("nested-ci-none-s0", "nested-ci-per_channel-s0"):
        record = json.loads((results_dir / "runs" / f"{name}.eval-test.json").read_text())
        summary = json.loads((results_dir / "runs" / f"{name}.json").read_text())
        config = yaml.safe_load((runs_dir / name / "config.yaml").read_text())
        chosen, scored = record["chosen_on"], record["scored_on"]
        assert record["checkpoint"] == "checkpoints/last.pt" and record["split"] == "test"
        assert (chosen["split"], chosen["num_images"], scored["num_images"]) == ("val", 7, 12)  # 0.2 of 36, 12
        # the thresholds applied on test are those chosen on val: the last epoch's validation tuned them too
        tuned = record["metrics"]["by_threshold"]["tuned"]
        assert tuned["thresholds"] == chosen["thresholds"] == summary["val"]["by_threshold"]["tuned"]["thresholds"]
        assert tuned["note"].startswith("thresholds tuned on val (7 images, stems sha256 ")
        assert record["metrics"]["ece"]["platt_parameters"] == chosen["platt"]
        assert set(record["metrics"]["ece"]["brier"]) == {"raw", "prior_corrected", "platt"}
        assert set(record["per_image"]["tuned"]) == set(config["data"]["test_stems"])
        assert not set(config["data"]["test_stems"]) & set(config["data"]["val_stems"])
        assert set(record["metrics"]["structure"]["by_threshold"]) == {"0.5", "prior_corrected", "tuned"}
        structure = summary["val"]["structure"]["by_threshold"]["tuned"]["mean"]  # the last epoch's too
        last_row = json.loads((runs_dir / name / "metrics.jsonl").read_text().splitlines()[-1])
        assert last_row["val/tuned/v_rand"] == structure["v_rand"] and "val/tuned/v_info" in last_row

    aggregate_directory(results_dir)
    markdown = (results_dir / "results.md").read_text()
    assert "#### Test split (12 images)" in markdown and "Dice @tuned (val-chosen)" in markdown
    assert "V_rand @tuned" in markdown and "(images)" in markdown and "Wilcoxon" in markdown
    assert markdown.index("#### Test split (12 images)") < markdown.index("#### Macro scores")
    csv_rows = (results_dir / "results.csv").read_text().splitlines()
    test_dice = [line for line in csv_rows if line.startswith("per_channel,test,dice,tuned,macro,1,")]
    assert len(test_dice) == 1 and test_dice[0].split(",")[14] == "12"  # 12 images paired with none

    (results_dir / "results.md").unlink()  # rebuilt from the committed files alone, evaluations included
    shutil.rmtree(runs_dir)
    argv = ["--experiment", str(experiment_file), "--profile", "ci", "--out", str(results_root), "--aggregate-only"]
    assert run_main(compare_app.main, argv) == 0
    assert (results_dir / "results.md").read_text() == markdown


@pytest.mark.parametrize("module", [grid.TRAIN_MODULE, grid.EVALUATE_MODULE])
def test_the_modules_the_grid_launches_run_with_python_m(tmp_path, module):
    """--jobs N starts python -m seg.apps.train (and seg.apps.evaluate) from the working directory: each module
    runs as a command."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: {module.split('.')[-1]}.py"), done.stderr


def test_limit_trains_a_slice_and_the_next_visit_finishes_the_grid_on_a_fresh_machine(tmp_path, capsys):
    """--limit 1 twice, with runs/ gone in between (a fresh GPU machine gets only the committed results): each
    call trains the next unfinished run and scores it on test; together they equal the whole grid's records."""
    experiment_file = tmp_path / "nested.yaml"
    experiment_file.write_text(NESTED)
    experiment = load_experiment(experiment_file)
    runs_dir, results_root = tmp_path / "runs", tmp_path / "results"
    extra = [f"run.out_dir={runs_dir}"]
    names = ["nested-ci-none-s0", "nested-ci-per_channel-s0"]
    results_dir = grid.run_experiment(experiment, "ci", extra, results_root=results_root, progress=False, limit=1)
    assert sorted(p.name for p in (results_dir / "runs").iterdir()) == [
        f"{names[0]}.eval-test.json",
        f"{names[0]}.json",
    ]
    assert "--limit 1: 1 of the 2 unfinished runs now, 1 left" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="1 of 2 run summaries missing"):  # the statistics wait for every run
        aggregate_directory(results_dir)

    shutil.rmtree(runs_dir)
    first = (results_dir / "runs" / f"{names[0]}.eval-test.json").read_text()
    argv = ["--experiment", str(experiment_file), "--profile", "ci", "--out", str(results_root), "--limit", "1"]
    # --jobs 2: the run trains in a subprocess and is scored on test in the next, before the call ends
    assert run_main(compare_app.main, [*argv, "--jobs", "2", "--set", f"run.out_dir={runs_dir}", "--no-progress"]) == 0
    output = capsys.readouterr().out
    assert "--limit 1: 1 of the 1 unfinished runs now, 0 left" in output and "have no last.pt" not in output
    assert sorted(p.name for p in runs_dir.iterdir()) == [names[1]]  # only the second run trained
    log = (runs_dir / names[1] / "compare.log").read_text()
    assert "epoch 1/1" in log and f"{names[1]}: test" in log  # the training's output, then the evaluation's
    assert sorted(p.name for p in (results_dir / "runs").iterdir()) == sorted(
        f"{name}{suffix}" for name in names for suffix in (".json", ".eval-test.json")
    )
    assert (results_dir / "runs" / f"{names[0]}.eval-test.json").read_text() == first
    assert "| per_channel | " in (results_dir / "results.md").read_text()  # the whole grid: aggregated
    assert run_main(compare_app.main, [*argv[:-2], "--limit", "0"]) == 2  # refused: one clear line, exit 2
