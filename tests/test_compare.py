"""The comparison: aggregation numbers worked out by hand, a tiny grid that resumes, the
experiment and sweep files, and the README result blocks."""

import math
import shutil
from pathlib import Path

import pytest
import yaml

from seg.apps import compare as compare_app
from seg.apps import train as train_app
from seg.cli import run_main
from seg.config import REPO_ROOT, expand_path, load_config
from seg.experiments import grid as compare
from seg.experiments import sweeps
from seg.experiments.aggregate import aggregate, find, paired_difference, t_interval
from seg.experiments.report import aggregate_directory, log_results_table, readme_blocks, replace_readme_block

T_975 = {1: 12.706205, 2: 4.302653}  # Student t quantiles t_{0.975, df} from a printed table
EXPERIMENTS = sorted(p for p in (REPO_ROOT / "experiments").glob("*.yaml") if not p.name.endswith(".sweep.yaml"))


# ------------------------------------------------------------------ statistics by hand


def test_t_interval_matches_the_formula_by_hand():
    # mean 0.7, sd = sqrt((0.01 + 0 + 0.01) / 2) = 0.1, half-width = t_{0.975,2} * 0.1 / sqrt(3)
    interval = t_interval([0.6, 0.7, 0.8])
    assert (interval.n, interval.mean, interval.sd) == (3, pytest.approx(0.7), pytest.approx(0.1))
    assert interval.half_width == pytest.approx(T_975[2] * 0.1 / math.sqrt(3), rel=1e-6)  # 0.248414
    assert t_interval([0.5, None, float("nan")]).n == 1  # missing values are left out ...
    assert t_interval([0.5]).half_width is None  # ... and one value has no interval


def _summary(dice: float, speck: float | None, ece: float, q: list[float], seconds: float) -> dict:
    """A summary.json as fit() writes it, reduced to the keys the aggregation reads."""
    block = {
        "dice": dice,
        "iou": dice / (2 - dice),
        "per_channel": {"cell": {"dice": 0.9, "iou": 0.8}, "speck": {"dice": speck, "iou": None}},
    }
    return {
        "val": {
            **block,
            "threshold": "0.5",
            "by_threshold": {"0.5": block, "tuned": {**block, "dice": dice + 0.1}},
            "ece": {"raw": {"cell": ece, "speck": ece}, "raw_mean": ece},
        },
        "effective_pos_weight": q,
        "wall_time_per_epoch_s": seconds,
    }


RUNS = {
    "none": {
        0: _summary(0.50, 0.10, 0.20, [1.0, 1.0], 10.0),
        1: _summary(0.60, 0.20, 0.30, [1.0, 1.0], 12.0),
        2: _summary(0.55, None, 0.25, [1.0, 1.0], 14.0),
    },
    "global": {
        0: _summary(0.58, 0.30, 0.10, [2.0, 400.0], 11.0),
        1: _summary(0.66, 0.40, 0.10, [2.2, 410.0], 13.0),
        2: _summary(0.64, 0.50, 0.10, [2.4, 420.0], 15.0),
    },
}


def test_aggregate_means_intervals_and_paired_differences_by_hand():
    rows = aggregate(RUNS, ["cell", "speck"], reference="none")
    row = find(rows, "global", "dice", "0.5", "macro")
    # global: 0.58, 0.66, 0.64 -> mean 0.626667; deviations -0.046667, 0.033333, 0.013333;
    # sd = sqrt((0.0021778 + 0.0011111 + 0.0001778) / 2) = 0.041633
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.626667, abs=1e-6)
    assert row["sd"] == pytest.approx(0.041633, abs=1e-6)
    half = T_975[2] * 0.041633 / math.sqrt(3)  # 0.103422
    assert (row["ci_low"], row["ci_high"]) == (
        pytest.approx(0.626667 - half, abs=1e-5),
        pytest.approx(0.626667 + half, abs=1e-5),
    )
    # paired by seed: differences 0.08, 0.06, 0.09 -> mean 0.076667, sd 0.015275, half 0.037946
    assert row["diff_n"] == 3 and row["diff_mean"] == pytest.approx(0.076667, abs=1e-6)
    assert row["diff_ci_high"] - row["diff_mean"] == pytest.approx(T_975[2] * 0.015275 / math.sqrt(3), abs=1e-5)
    # speck Dice is null for none at seed 2: none has n = 2 (mean 0.15, sd 0.070711), pairs over seeds 0 and 1
    speck_none, speck_global = find(rows, "none", "dice", "0.5", "speck"), find(rows, "global", "dice", "0.5", "speck")
    assert speck_none["n"] == 2 and speck_none["mean"] == pytest.approx(0.15)
    assert speck_none["ci_high"] - 0.15 == pytest.approx(T_975[1] * 0.070711 / math.sqrt(2), abs=1e-5)  # 0.635310
    assert speck_global["diff_n"] == 2 and speck_global["diff_mean"] == pytest.approx(0.2)  # 0.2, 0.2: sd 0
    assert speck_global["diff_ci_low"] == pytest.approx(0.2) and speck_global["diff_ci_high"] == pytest.approx(0.2)
    assert find(rows, "none", "dice", "0.5", "macro")["diff_n"] is None  # the reference is not paired with itself
    # the tuned block is read from by_threshold; prior_corrected is absent in these summaries: no row
    assert find(rows, "none", "dice", "tuned", "macro")["mean"] == pytest.approx(0.65)
    assert find(rows, "none", "dice", "prior_corrected", "macro") is None
    assert find(rows, "none", "iou", "0.5", "speck") is None  # null in every run
    ece = find(rows, "global", "ece", "raw", "macro")  # 0.1 - (0.2, 0.3, 0.25) -> -0.15
    assert ece["mean"] == pytest.approx(0.1) and ece["diff_mean"] == pytest.approx(-0.15)
    assert find(rows, "global", "effective_pos_weight", "", "speck")["mean"] == pytest.approx(410.0)
    assert find(rows, "global", "wall_time_per_epoch_s")["mean"] == pytest.approx(13.0)


def test_paired_difference_pairs_by_seed_not_by_position():
    interval = paired_difference({0: 0.5, 1: 0.7, 5: 0.9}, {1: 0.6, 0: 0.4, 2: 0.1})  # seeds 0, 1: +0.1, +0.1
    assert (interval.n, interval.mean, interval.sd) == (2, pytest.approx(0.1), pytest.approx(0.0))


# ------------------------------------------------------------------ a tiny grid, end to end


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
    import seg.training

    experiment_file = tmp_path / "tiny.yaml"
    experiment_file.write_text(TINY)
    experiment = compare.load_experiment(experiment_file)
    runs_dir, results_root = tmp_path / "runs", tmp_path / "results"
    extra = [f"run.out_dir={runs_dir}"]
    real_train, trained = seg.training._train, []

    def interrupted_train(cfg, *args, **kwargs):  # the third run is interrupted before its first step
        trained.append(cfg.run.name)
        if len(trained) == 3:
            raise RuntimeError("simulated interruption")
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(seg.training, "_train", interrupted_train)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        compare.run_experiment(experiment, "ci", extra, results_root=results_root, progress=False)
    assert trained == ["tiny-ci-none-s0", "tiny-ci-none-s1", "tiny-ci-per_channel-s0"]
    finished = {name: (runs_dir / name / "checkpoints" / "last.pt").stat().st_mtime_ns for name in trained[:2]}

    trained.clear()
    results_dir = compare.run_experiment(experiment, "ci", extra, results_root=results_root, progress=False)
    assert trained == ["tiny-ci-per_channel-s0", "tiny-ci-per_channel-s1"]  # finished runs were not retrained
    assert {n: (runs_dir / n / "checkpoints" / "last.pt").stat().st_mtime_ns for n in finished} == finished
    config = yaml.safe_load((runs_dir / "tiny-ci-per_channel-s1" / "config.yaml").read_text())
    assert (config["run"]["seed"], config["loss"]["negatives"], config["logging"]["wandb"]["group"]) == (
        1,
        "all_zero",
        "tiny",
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
    assert csv_rows[0].startswith("strategy,quantity,variant,channel,n,mean")
    assert {line.split(",")[0] for line in csv_rows[1:]} == {"none", "per_channel"}
    assert any(line.startswith("per_channel,dice,0.5,speck,2,") for line in csv_rows)
    assert (results_dir / "dice_per_channel.png").stat().st_size > 0
    assert (results_dir / "dice_vs_frequency.png").stat().st_size > 0

    # --jobs: each run as scripts/train.py (called here in this process); finished runs are skipped
    calls = []

    def fake_subprocess_run(command, stdout, **kwargs):
        calls.append(command)
        assert Path(command[1]) == compare.TRAIN_SCRIPT
        return type("Done", (), {"returncode": run_main(train_app.main, command[2:])})()

    monkeypatch.setattr(compare.subprocess, "run", fake_subprocess_run)
    compare.run_experiment(experiment, "ci", extra, jobs=2, results_root=results_root, progress=False)
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
    monkeypatch.setattr(compare.subprocess, "run", None)  # no subprocess may start either
    compare.run_experiment(experiment, "ci", extra, results_root=results_root, progress=False)
    compare.run_experiment(experiment, "ci", extra, jobs=2, results_root=results_root, progress=False)
    assert trained == [] and not runs_dir.exists()


def test_bad_experiment_is_refused_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("none: {loss.weighting: none}", "none: {loss.weighting: none, train.epochs: 9}"))
    assert run_main(compare_app.main, ["--experiment", str(bad)]) == 2
    assert "strategies may set loss.* keys only" in capsys.readouterr().err
    bad.write_text(TINY.replace("loss.weighting: none}", "loss.weighting: nothing}"))
    with pytest.raises(Exception, match="strategy none, seed 0"):
        compare.resolve_configs(compare.load_experiment(bad), compare.plan_runs(compare.load_experiment(bad), "ci"))


def test_results_table_goes_to_wandb_unless_disabled(tmp_path, monkeypatch):
    logged = []

    class FakeTracker:
        def __init__(self, run_dir, mode, project, group, name, config, tags=None):
            logged.append((mode, group, name))

        def log_table(self, key, columns, rows):
            logged.append((key, columns[:2], len(rows)))

        def finish(self):
            logged.append("finished")

    import seg.tracking

    monkeypatch.setattr(seg.tracking, "Tracker", FakeTracker)
    manifest = {
        "experiment": "x",
        "profile": "quick",
        "strategies": {},
        "seeds": [0],
        "budget": {},
        "wandb": {"mode": "disabled", "project": "seg", "group": "x", "out_dir": "/nonexistent"},
    }
    log_results_table(manifest, [])
    assert logged == []
    rows = aggregate(RUNS, ["cell", "speck"])
    manifest["wandb"].update(mode="offline", out_dir=str(tmp_path))
    log_results_table(manifest, rows)
    assert logged == [
        ("offline", "x", "x-quick-results"),
        ("comparison/results", ["strategy", "quantity"], len(rows)),
        "finished",
    ]


# ------------------------------------------------------------------ the committed experiment and sweep files


GRIDS = {
    "weighting_isbi2012": {"none", "global", "per_batch", "border_map"},
    "weighting_camvid": {"none", "global", "per_channel", "per_batch", "class_map"},
}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_files_validate_for_every_profile(path):
    experiment = compare.load_experiment(path)
    assert len(experiment.seeds) >= 3 and {"quick", "full"} <= set(experiment.profiles)
    if experiment.name in GRIDS:
        assert set(experiment.strategies) == GRIDS[experiment.name]
    for profile in experiment.profiles:
        runs = compare.plan_runs(experiment, profile)
        configs = compare.resolve_configs(experiment, runs)
        assert all(c.loss.normalize for c in configs)
        assert (
            len({(c.data.split_seed, c.train.epochs, c.data.image_size, c.data.samples_per_epoch) for c in configs})
            == 1
        )


def _grid_points(sweep: dict):
    """Every run of a grid sweep as the bare key=value arguments a W&B agent passes (str(value))."""
    parameters = sweep["parameters"]
    assert {k for k, v in parameters.items() if "values" in v} == {"loss.weighting", "run.seed"}
    fixed = [f"{k}={v['value']}" for k, v in parameters.items() if "value" in v]
    for weighting in parameters["loss.weighting"]["values"]:
        for seed in parameters["run.seed"]["values"]:
            yield [*fixed, f"loss.weighting={weighting}", f"run.seed={seed}"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_sweep_files_match_the_experiment_and_use_valid_keys(path):
    experiment = compare.load_experiment(path)
    expected = sweeps.sweep_files(experiment)
    committed = {p.name: yaml.safe_load(p.read_text()) for p in path.parent.glob(f"{path.stem}*.sweep.yaml")}
    assert committed == expected, "regenerate with: python scripts/compare.py --experiment ... --write-sweeps"
    covered = set()
    for sweep in committed.values():
        assert sweep["method"] == "grid" and "${args_no_hyphens}" in sweep["command"]
        assert set(sweep["parameters"]["run.seed"]["values"]) == set(experiment.seeds)
        for arguments in _grid_points(sweep):
            cfg = load_config(expand_path(experiment.base), arguments)  # every key valid, every value too
            covered.add((cfg.loss.weighting, cfg.loss.apply_as, cfg.loss.negatives))
    for overrides in experiment.strategies.values():
        cfg = load_config(expand_path(experiment.base), [*experiment.common, *overrides])
        assert (cfg.loss.weighting, cfg.loss.apply_as, cfg.loss.negatives) in covered


# ------------------------------------------------------------------ README result blocks


def test_readme_result_blocks_equal_the_committed_results():
    readme = REPO_ROOT / "README.md"
    blocks = readme_blocks(readme.read_text()) if readme.is_file() else {}
    for name, body in blocks.items():
        results = REPO_ROOT / "experiments" / "results" / name / "results.md"
        assert results.is_file(), f"README block results:{name} has no {results}"
        assert body.strip() == results.read_text().strip(), (
            f"README block results:{name} differs from {results}: run scripts/compare.py ... --update-readme"
        )


def test_readme_block_replacement_round_trips():
    text = "intro\n<!-- results:a-quick -->\nold\n<!-- /results:a-quick -->\nend\n"
    updated = replace_readme_block(text, "a-quick", "| new | table |\n")
    assert updated == "intro\n<!-- results:a-quick -->\n| new | table |\n<!-- /results:a-quick -->\nend\n"
    assert readme_blocks(updated) == {"a-quick": "| new | table |\n"}
    with pytest.raises(ValueError, match="results:b"):
        replace_readme_block(text, "b", "x")


RESULTS = sorted(p for p in (REPO_ROOT / "experiments" / "results").iterdir() if (p / "experiment.json").is_file())


@pytest.mark.parametrize("committed", RESULTS, ids=[p.name for p in RESULTS])
def test_committed_results_rebuild_byte_for_byte(committed, tmp_path, monkeypatch, capsys):
    """--aggregate-only on a copy of a committed results folder writes the same results.md and results.csv.

    A folder whose per-run summaries were never committed must say so in results.md."""
    import json

    from seg.experiments import report as compare_report

    if not (committed / "runs").is_dir():
        assert "not rebuildable from this checkout" in (committed / "results.md").read_text().lower()
        return
    manifest = json.loads((committed / "experiment.json").read_text())
    out = tmp_path / "results"
    shutil.copytree(committed, out / committed.name)
    monkeypatch.setattr(compare_report, "log_results_table", lambda *args: None)  # no W&B run here
    argv = [
        "--experiment",
        str(REPO_ROOT / manifest["experiment_file"]),
        "--profile",
        manifest["profile"],
        "--out",
        str(out),
        "--aggregate-only",
        "--no-progress",
    ]
    assert run_main(compare_app.main, argv) == 0, capsys.readouterr().err
    for name in ("results.md", "results.csv"):
        assert (out / committed.name / name).read_bytes() == (committed / name).read_bytes(), name
