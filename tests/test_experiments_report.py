"""Tests for seg/experiments/report.py: the rows as a W&B table, the README result blocks."""

import dataclasses

import pytest
from test_experiments_aggregate import RUNS

from seg.config import REPO_ROOT
from seg.experiments.aggregate import aggregate
from seg.experiments.manifest import Manifest, WandbInfo
from seg.experiments.report import log_results_table, readme_blocks, replace_readme_block


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
    committed = REPO_ROOT / "experiments" / "results" / "weighting_isbi2012-quick" / "experiment.json"
    manifest = dataclasses.replace(
        Manifest.read(committed),
        experiment="x",
        wandb=WandbInfo(mode="disabled", project="seg", group="x", out_dir="/nonexistent"),
    )
    log_results_table(manifest, [])
    assert logged == []
    rows = aggregate(RUNS, ["cell", "speck"])
    wandb = dataclasses.replace(manifest.wandb, mode="offline", out_dir=str(tmp_path))
    manifest = dataclasses.replace(manifest, wandb=wandb)
    log_results_table(manifest, rows)
    assert logged == [
        ("offline", "x", "x-quick-results"),
        ("comparison/results", ["strategy", "split"], len(rows)),
        "finished",
    ]


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
