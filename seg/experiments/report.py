"""The comparison's outputs, written from a results folder alone.

A results folder (``experiments/results/<experiment>-<profile>/``) holds the manifest
``experiment.json`` and a copy of every run's summary.json in ``runs/``. From them:
results.md (people, :mod:`seg.experiments.markdown`; also copied into the README between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``), results.csv (every row of
:func:`seg.experiments.aggregate.aggregate`) and the plots of :mod:`seg.experiments.plots`.
Unless W&B is disabled, a W&B run (job_type compare) gets the plots, a wide table of the runs
(strategy x seed), a summary table (one row per strategy) and the rows.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from seg.config import ConfigError, expand_path
from seg.experiments.aggregate import CSV_COLUMNS, MACRO, aggregate, format_csv_value
from seg.experiments.manifest import MANIFEST, Manifest
from seg.experiments.markdown import results_markdown
from seg.experiments.plots import PLOTS, write_comparison_plots
from seg.results import EvalResult, RunSummary, Scores

# ------------------------------------------------------------------ a results folder


def read_evaluations(results_dir: Path, manifest: Manifest) -> dict[str, dict[int, EvalResult]]:
    """``evaluations[strategy][seed]``: each run's final model on the test split (``runs/<run>.eval-test.json``),
    for the runs that have one."""
    evaluations: dict[str, dict[int, EvalResult]] = {name: {} for name in manifest.strategies}
    if manifest.test is None:
        return evaluations
    for run in manifest.runs:
        path = results_dir / "runs" / f"{run.name}.eval-test.json"
        if path.is_file():
            evaluations[run.strategy][run.seed] = EvalResult.read(path)
    return evaluations


def read_results(results_dir: Path) -> tuple[Manifest, dict[str, dict[int, RunSummary]]]:
    """The manifest and ``runs[strategy][seed] = summary`` from ``results_dir`` (committed files only)."""
    manifest_path = results_dir / MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"{manifest_path}: missing; run compare.py without --aggregate-only first")
    manifest = Manifest.read(manifest_path)
    missing = missing_runs(results_dir, manifest)
    if missing:
        raise ConfigError(
            f"{results_dir / 'runs'}: {len(missing)} of {len(manifest.runs)} run summaries missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); run compare.py to train them"
        )
    runs: dict[str, dict[int, RunSummary]] = {name: {} for name in manifest.strategies}
    for run in manifest.runs:
        runs[run.strategy][run.seed] = RunSummary.read(results_dir / "runs" / f"{run.name}.json")
    return manifest, runs


def missing_runs(results_dir: Path, manifest: Manifest | None = None) -> list[str]:
    """The grid's runs (the manifest's plan) whose summary is not recorded in ``results_dir/runs`` yet."""
    manifest = manifest or Manifest.read(results_dir / MANIFEST)
    return [run.name for run in manifest.runs if not (results_dir / "runs" / f"{run.name}.json").is_file()]


def aggregate_directory(results_dir: Path) -> list[dict]:
    """Write results.md, results.csv and the plots from ``results_dir``; return the rows."""
    manifest, runs = read_results(results_dir)
    classes, reference = manifest.classes, manifest.reference
    provenance = [runs[run.strategy][run.seed].provenance for run in manifest.runs]
    evaluations = read_evaluations(results_dir, manifest)
    rows = aggregate(runs, classes, reference, evaluations if any(evaluations.values()) else None)
    (results_dir / "results.md").write_text(results_markdown(manifest, rows, provenance))
    write_csv(rows, results_dir / "results.csv")
    fractions, title = manifest.train_positive_fraction, manifest.title_text
    write_comparison_plots(rows, list(manifest.strategies), classes, fractions, results_dir, title, reference)
    log_comparison(manifest, rows, run_table(manifest, runs, evaluations), results_dir)
    return rows


def run_table(
    manifest: Manifest, runs: dict[str, dict[int, RunSummary]], evaluations: dict[str, dict[int, EvalResult]]
) -> tuple[list[str], list[list]]:
    """The wide table: one row per strategy x seed (columns: the run, its best epoch, macro validation Dice
    and IoU, macro Dice under each threshold policy and per channel, the same on the test split where
    the run was evaluated on it)."""
    policies = sorted({p for by_seed in runs.values() for s in by_seed.values() for p in s.val.by_threshold})
    columns = ["strategy", "seed", "run", "best_epoch"]
    splits = ["val"] + (["test"] if any(evaluations.values()) else [])
    for split in splits:
        columns += [f"{split}/dice", f"{split}/iou"] + [f"{split}/{p}/dice" for p in policies]
        columns += [f"{split}/dice/{c}" for c in manifest.classes]
    table = []
    for run in manifest.runs:
        summary = runs[run.strategy][run.seed]
        row: list = [run.strategy, run.seed, run.name, summary.best_epoch]
        for split in splits:
            evaluation = evaluations.get(run.strategy, {}).get(run.seed)
            scores = summary.val if split == "val" else evaluation.metrics if evaluation is not None else None
            row += _score_columns(scores, policies, manifest.classes)
        table.append(row)
    return columns, table


def _score_columns(scores: Scores | None, policies: list[str], classes: list[str]) -> list:
    if scores is None:
        return [None] * (2 + len(policies) + len(classes))
    by_threshold = scores.by_threshold
    return [
        scores.dice,
        scores.iou,
        *(by_threshold[p].dice if p in by_threshold else None for p in policies),
        *(scores.per_channel[c].dice for c in classes),
    ]


def summary_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """The summary table: one row per strategy; for each macro (split, quantity, threshold) of the
    aggregated rows, the mean over seeds, its interval, and the paired difference from the reference."""
    macro = [row for row in rows if row["channel"] == MACRO]
    keys = list(dict.fromkeys(f"{r['split']}/{r['quantity']}/{r['variant']}" for r in macro))
    columns = ["strategy", "n"]
    for key in keys:
        columns += [f"{key}/mean", f"{key}/ci_low", f"{key}/ci_high", f"{key}/diff_mean"]
    table = []
    for strategy in dict.fromkeys(row["strategy"] for row in macro):
        found = {f"{r['split']}/{r['quantity']}/{r['variant']}": r for r in macro if r["strategy"] == strategy}
        line: list = [strategy, max((r["n"] for r in found.values()), default=0)]
        for key in keys:
            row = found.get(key, {})
            line += [row.get("mean"), row.get("ci_low"), row.get("ci_high"), row.get("diff_mean")]
        table.append(line)
    return columns, table


def log_comparison(manifest: Manifest, rows: list[dict], runs: tuple[list[str], list[list]], folder: Path) -> None:
    """A W&B run of the experiment's group (job_type compare; not when W&B is disabled): the plots as images,
    the runs as a wide table (strategy x seed), the summary table and every aggregated row (long format)."""
    from seg.tracking import Tracker

    wandb = manifest.wandb
    if wandb.mode == "disabled":
        return
    name = f"{manifest.experiment}-{manifest.profile}-results"
    run_dir = expand_path(wandb.out_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    written = manifest.to_dict()
    tracker = Tracker(
        run_dir,
        wandb.mode,
        wandb.project,
        wandb.group,
        name,
        {k: written[k] for k in ("experiment", "profile", "strategies", "seeds", "budget")},
        tags=["comparison"],
        job_type="compare",
    )
    tracker.log_image_files({f"comparison/{key}": folder / file for key, file in PLOTS.items()})
    tracker.log_table("comparison/runs", *runs)
    tracker.log_table("comparison/summary", *summary_table(rows))
    tracker.log_table("comparison/results", list(CSV_COLUMNS), [[row[c] for c in CSV_COLUMNS] for row in rows])
    tracker.finish()


def update_readme(readme: Path, results_dir: Path) -> None:
    """Replace the README block ``<!-- results:NAME -->`` (NAME = the results folder) by results.md."""
    name = results_dir.name
    if not readme.is_file():
        raise ConfigError(f"{readme}: not found")
    try:
        text = replace_readme_block(readme.read_text(), name, (results_dir / "results.md").read_text())
    except ValueError as err:
        raise ConfigError(f"{readme}: {err}; add them where the table should go") from None
    readme.write_text(text)


# ------------------------------------------------------------------ README blocks


def _block_pattern(name: str | None = None) -> re.Pattern:
    label = re.escape(name) if name else r"[^\s>]+"
    return re.compile(rf"<!-- results:(?P<name>{label}) -->\n?(?P<body>.*?)<!-- /results:(?P=name) -->", re.S)


def readme_blocks(text: str) -> dict[str, str]:
    """``{NAME: text between the markers}`` for every results block of a README."""
    return {m.group("name"): m.group("body") for m in _block_pattern().finditer(text)}


def replace_readme_block(text: str, name: str, markdown: str) -> str:
    """README text with the block NAME replaced by ``markdown``; ValueError when the markers are missing."""
    pattern = _block_pattern(name)
    if not pattern.search(text):
        raise ValueError(f"no <!-- results:{name} --> ... <!-- /results:{name} --> markers")
    block = f"<!-- results:{name} -->\n{markdown.rstrip()}\n<!-- /results:{name} -->"
    return pattern.sub(lambda _: block, text, count=1)


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([format_csv_value(row[c]) for c in CSV_COLUMNS])
