"""Tests for seg/experiments/report.py: the comparison as a W&B run (read back offline), the README result blocks."""

import json
import shutil

import pytest
from conftest import REPO
from wandb_records import history_rows, run_info

from seg.experiments.report import readme_blocks, replace_readme_block


def test_the_comparison_goes_to_wandb_unless_disabled(tmp_path):
    """A committed results folder re-aggregated with W&B offline: a compare run of the experiment's group
    with the plots as images, the wide table (strategy x seed), the summary table and the rows."""
    import seg.experiments.report as report

    folder = tmp_path / "weighting_isbi2012-quick"
    shutil.copytree(REPO / "experiments" / "results" / folder.name, folder)
    manifest = json.loads((folder / "experiment.json").read_text())
    disabled = manifest["wandb"] | {"mode": "disabled", "out_dir": str(tmp_path)}
    (folder / "experiment.json").write_text(json.dumps(manifest | {"wandb": disabled}))
    report.aggregate_directory(folder)
    assert not (tmp_path / "weighting_isbi2012-quick-results").exists()  # disabled: no W&B run at all

    wandb = manifest["wandb"] | {"mode": "offline", "group": "weighting_isbi2012-quick", "out_dir": str(tmp_path)}
    (folder / "experiment.json").write_text(json.dumps(manifest | {"wandb": wandb}))
    rows = report.aggregate_directory(folder)
    run = tmp_path / "weighting_isbi2012-quick-results"
    assert run_info(run) == {
        "name": "weighting_isbi2012-quick-results",
        "group": "weighting_isbi2012-quick",
        "job_type": "compare",
        "tags": ["comparison"],
    }
    logged = {key for row in history_rows(run) for key in row}
    assert "comparison/dice_per_channel/_type" in logged  # the plot, as an image
    tables = {
        path.name.split("_")[0]: json.loads(path.read_text())
        for path in run.glob("wandb/offline-run-*/files/media/table/comparison/*.table.json")
    }
    wide = tables["runs"]
    assert len(wide["data"]) == 4 * 3  # strategies x seeds
    columns = wide["columns"]
    for line in wide["data"]:
        record = dict(zip(columns, line, strict=True))
        summary = json.loads((folder / "runs" / f"{record['run']}.json").read_text())
        assert record["best_epoch"] == summary["best_epoch"]
        assert record["val/dice"] == summary["val"]["dice"]
        assert record["val/tuned/dice"] == summary["val"]["by_threshold"]["tuned"]["dice"]
        assert record["val/dice/membrane"] == summary["val"]["per_channel"]["membrane"]["dice"]
        test = json.loads((folder / "runs" / f"{record['run']}.eval-test.json").read_text())
        assert record["test/0.5/dice"] == test["metrics"]["by_threshold"]["0.5"]["dice"]
    summary_table = tables["summary"]
    assert [line[0] for line in summary_table["data"]] == ["none", "global", "per_batch", "border_map"]
    by_strategy = {line[0]: dict(zip(summary_table["columns"], line, strict=True)) for line in summary_table["data"]}
    expected = next(
        r
        for r in rows
        if (r["strategy"], r["split"], r["quantity"], r["variant"], r["channel"])
        == ("global", "test", "dice", "tuned", "macro")
    )
    assert by_strategy["global"]["test/dice/tuned/mean"] == expected["mean"]
    assert by_strategy["global"]["test/dice/tuned/diff_mean"] == expected["diff_mean"]
    assert len(tables["results"]["data"]) == len(rows)


def test_readme_result_blocks_equal_the_committed_results():
    readme = REPO / "README.md"
    blocks = readme_blocks(readme.read_text()) if readme.is_file() else {}
    for name, body in blocks.items():
        results = REPO / "experiments" / "results" / name / "results.md"
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
