"""Tests driving seg.apps.compare.main: a bad experiment is exit 2 with one line; --aggregate-only on a copy of
every committed results folder rebuilds results.md and results.csv byte for byte."""

import json
import shutil

import pytest
from conftest import REPO
from test_experiments_grid import TINY

from seg.apps import compare as compare_app
from seg.cli import run_main


def test_bad_experiment_is_refused_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("none: {loss.weighting: none}", "none: {loss.weighting: none, train.epochs: 9}"))
    assert run_main(compare_app.main, ["--experiment", str(bad)]) == 2
    assert "strategies may set loss.* keys and" in capsys.readouterr().err


RESULTS = sorted(p for p in (REPO / "experiments" / "results").iterdir() if (p / "experiment.json").is_file())


@pytest.mark.parametrize("committed", RESULTS, ids=[p.name for p in RESULTS])
def test_committed_results_rebuild_byte_for_byte(committed, tmp_path, monkeypatch, capsys):
    """--aggregate-only on a copy of a committed results folder writes the same results.md and results.csv.

    A folder whose per-run summaries were never committed must say so in results.md."""
    from seg.experiments import report as compare_report

    if not (committed / "runs").is_dir():
        assert "not rebuildable from this checkout" in (committed / "results.md").read_text().lower()
        return
    manifest = json.loads((committed / "experiment.json").read_text())
    out = tmp_path / "results"
    shutil.copytree(committed, out / committed.name)
    monkeypatch.setattr(compare_report, "log_comparison", lambda *args: None)  # no W&B run here
    argv = [
        "--experiment",
        str(REPO / manifest["experiment_file"]),
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
