"""Evaluate a run's best checkpoint: python scripts/evaluate.py --run runs/RUN_NAME [--split val|test]

Writes eval-<split>.json, eval-<split>.md (Dice/IoU per channel and averaged under each
threshold policy, thresholds, ECE), eval-<split>-overlays.png and eval-<split>-reliability.png
into the run directory, and logs the table and overlays to W&B (eval/<split>/wandb).
--split test needs labelled images in <data.root>/test/; its tuned thresholds come from val.
Exit codes: 0 done, 2 missing run/checkpoint/split or bad config (one line), 1 other errors.
"""

from __future__ import annotations

from pathlib import Path

from seg.cli import ArgumentParser, add_common_arguments, at_least, quiet_environment

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "evaluate.py"  # the command provenance records


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="evaluate.py", description=__doc__)
    parser.add_argument("--run", required=True, help="the run directory, e.g. runs/synthetic")
    parser.add_argument("--split", choices=["val", "test"], default="val", help="which labelled split (default val)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the run's train.device")
    parser.add_argument("--overlays", type=at_least(0), default=8, help="examples in the overlay grid (default 8)")
    parser.add_argument(
        "--wandb", choices=["offline", "online", "disabled"], help="W&B mode (default: the run's logging.wandb.mode)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    quiet_environment()
    from seg.outputs.tables import results_table
    from seg.run_evaluation import evaluate_run

    result = evaluate_run(args.run, args.split, args.device, args.overlays, args.wandb, not args.no_progress)
    classes = list(result["metrics"]["per_channel"])
    print(results_table(result["metrics"], classes, f"{result['run']}: {args.split}"))
    print(f"written: {Path(args.run) / f'eval-{args.split}.json'} (.md, -overlays.png, -reliability.png)")
    return 0
