"""Compare weighting strategies: every strategy x seed of an experiment, then honest statistics.

    python scripts/compare.py --experiment experiments/NAME.yaml [--profile quick|full] [--jobs N]
                              [--limit N] [--set key=value ...] [--out DIR] [--aggregate-only]
                              [--update-readme]

Runs are named <experiment>-<profile>-<strategy>-s<seed> under run.out_dir (runs/); an
interrupted comparison resumes (finished runs are skipped). --limit N trains only the next N
unfinished runs (a slice of the grid, e.g. what fits one visit to a GPU machine); results.md
is written once every run is recorded. Results go to
DIR/<experiment>-<profile>/ (DIR defaults to experiments/results): results.md, results.csv,
plots, experiment.json and runs/<run>.json (each run's summary.json). --aggregate-only
rebuilds them from those files alone; --update-readme copies results.md into README.md
between <!-- results:NAME --> and <!-- /results:NAME -->. --write-sweeps writes the W&B
sweep files for the experiment's grid. Relative paths (DIR, README.md, the experiment's files)
are those of the working directory: run it from the repository root. Exit codes: 0 done,
2 bad experiment/config/data, 1 other.
"""

from __future__ import annotations

from pathlib import Path

from seg.cli import ArgumentParser, add_common_arguments, add_override_argument, at_least, quiet_environment

SCRIPT = "scripts/compare.py"  # the command provenance records (as typed at the repository root)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="compare.py", description=__doc__)
    parser.add_argument("--experiment", required=True, help="experiment YAML (experiments/NAME.yaml)")
    parser.add_argument("--profile", default="quick", help="budget profile of the experiment (default quick)")
    parser.add_argument(
        "--jobs",
        type=at_least(1),
        default=1,
        help="runs at a time, as subprocesses (default 1; wall time per epoch is measured with 1)",
    )
    parser.add_argument(
        "--limit",
        type=at_least(1),
        default=None,
        help="train at most N of the unfinished runs, in the grid's order (a slice: e.g. one GPU visit)",
    )
    add_override_argument(parser, "override a config key for every run, repeatable")
    parser.add_argument("--out", type=Path, default=None, help="results root (default experiments/results)")
    parser.add_argument("--aggregate-only", action="store_true", help="re-aggregate from the copied summaries")
    parser.add_argument("--update-readme", action="store_true", help="copy results.md into README.md's block")
    parser.add_argument("--write-sweeps", action="store_true", help="write the W&B sweep files and stop")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    quiet_environment()
    from seg.config import ConfigError
    from seg.experiments.experiment import load_experiment, results_directory
    from seg.experiments.grid import run_experiment
    from seg.experiments.report import aggregate_directory, missing_runs, update_readme
    from seg.experiments.sweeps import write_sweeps

    readme = Path("README.md").absolute()
    if args.update_readme and not readme.is_file():  # refused before any run trains
        raise ConfigError(f"{readme}: not found; --update-readme updates the README.md of the folder you run from")
    experiment = load_experiment(args.experiment)
    if args.write_sweeps:
        for path in write_sweeps(experiment):
            print(f"wrote {path}")
        return 0
    results_dir = results_directory(experiment, args.profile, args.out)
    if not args.aggregate_only:
        run_experiment(
            experiment, args.profile, args.overrides, args.jobs, args.out, not args.no_progress, limit=args.limit
        )
    missing = missing_runs(results_dir) if args.limit is not None else []
    if missing:  # a slice of the grid: the statistics wait for every run
        print(f"{len(missing)} run(s) of the grid still to train (compare.py --limit N again); results.md is written")
        print("once all are recorded (then compare.py --aggregate-only)")
        return 0
    aggregate_directory(results_dir)
    print(f"wrote {results_dir / 'results.md'}")
    print((results_dir / "results.md").read_text())
    if args.update_readme:
        update_readme(readme, results_dir)
        print(f"updated README.md block results:{results_dir.name}")
    return 0
