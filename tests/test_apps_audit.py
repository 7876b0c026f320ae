"""seg/apps/audit.py (scripts/audit_masks.py): exit codes, one-line errors, what it prints."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, problem_folder

# ------------------------------------------------------------------ the script


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "audit_masks.py"), *args, "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_script_exit_0_with_problems_reported(tmp_path):
    masks = problem_folder(tmp_path / "data")
    result = run_script(
        "--masks",
        str(masks),
        "--format",
        "binary",
        "--positive-values",
        "255",
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "mask_stats.json").read_text())
    assert len(stats["problems"]) == 8 and stats["format"]["positive_values"] == [255]
    assert "problem unexpected_values: 1" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--masks", "{tmp}/empty/masks", "--format", "binary"], "no masks found"),
        (["--masks", "{tmp}/nowhere", "--format", "binary"], "masks folder not found"),
        (["--masks", "{tmp}/empty/masks"], "--masks needs --format"),
        (["--masks", "{tmp}/empty/masks", "--format", "index"], "--classes is required"),
        (["--config", "{tmp}/missing.yaml"], "missing.yaml: config file not found"),
        (["--format", "binary"], "one of the arguments --config --masks is required"),
    ],
)
def test_script_exit_2_one_line(tmp_path, args, message):
    (tmp_path / "empty" / "masks").mkdir(parents=True)
    result = run_script(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (REPO / "runs" / "audit-empty").exists()


@pytest.mark.parametrize(
    "args, line",
    [
        (["--classes", "a,b"], "error: --classes: --format binary has one channel; --classes must list one name"),
        (["--format", "index", "--classes", "a,b,a"], "error: --classes has duplicate names: ['a', 'b', 'a']"),
        (["--positive-values", "70000"], "error: --positive-values: Input should be less than or equal to 65535"),
        (["--format", "index", "--classes", "a,b", "--ignore-index", "-1"], "error: --ignore-index: Input should be"),
    ],
)
def test_masks_options_are_checked_as_the_config_is(tmp_path, capsys, args, line):
    """--masks: the options go through the config schema; its message names the option, on one line."""
    from seg.apps import audit as audit_app
    from seg.cli import run_main

    masks = problem_folder(tmp_path / "data")
    argv = ["--masks", str(masks), "--format", "binary", *args, "--out", str(tmp_path / "out"), "--no-progress"]
    code = run_main(audit_app.main, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(line), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.weighting=focal", "key 'loss.weighting': must be one of border_map, class_map, global, none"),
        ("loss.weighting=border_map", "loss.weighting: border_map needs instances"),
    ],
)
def test_config_strategy_checks_refuse_before_any_work(tmp_path, capsys, override, message):
    """--config: a config training would refuse (here a strategy check) is refused by the audit too, exit 2."""
    from seg.apps import audit as audit_app
    from seg.cli import run_main

    out = tmp_path / "out"
    argv = ["--config", str(REPO / "configs" / "camvid.yaml"), "--set", override, "--out", str(out), "--no-progress"]
    assert run_main(audit_app.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_wandb_logs_the_plots_channels_and_counts(tmp_path, synthetic_root):
    from wandb_records import history_rows, run_info, summary_values

    from seg.apps import audit as audit_app
    from seg.cli import run_main

    out = tmp_path / "audit"
    args = ["--config", str(REPO / "configs" / "synthetic.yaml"), "--set", f"data.root={synthetic_root}"]
    assert run_main(audit_app.main, [*args, "--out", str(out), "--no-progress", "--wandb"]) == 0
    stats = json.loads((out / "mask_stats.json").read_text())
    assert run_info(out) == {
        "name": "audit-synthetic-train",
        "group": "audit-synthetic",
        "job_type": "audit",
        "tags": ["audit"],
    }
    logged = {key for row in history_rows(out) for key in row}
    assert {"audit/positive_fraction/_type", "audit/image_positive_fraction/_type"} <= logged  # the plots
    (table,) = out.glob("wandb/offline-run-*/files/media/table/audit/channels_*.table.json")
    rows = json.loads(table.read_text())["data"]
    assert [row[0] for row in rows] == ["cell", "nucleus", "speck"]
    for row, channel in zip(rows, stats["channels"], strict=True):
        assert row[1:4] == [channel["positive_fraction"], channel["positive_pixels"], channel["total_pixels"]]
        assert row[6:] == [channel["pos_weight"]["pixels"], channel["pos_weight"]["all_zero"]]
    summary = summary_values(out)
    assert summary["images"] == stats["images"] and summary["global_pos_weight"] == stats["global_pos_weight"]
    assert run_main(audit_app.main, [*args, "--out", str(tmp_path / "plain"), "--no-progress"]) == 0
    assert not (tmp_path / "plain" / "wandb").exists()  # no --wandb: no W&B run
