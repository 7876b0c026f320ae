"""Evaluate a run's checkpoint: python scripts/evaluate.py --run runs/RUN_NAME [--split val|test] [--checkpoint last]

Thresholds (tuned) and Platt scaling are chosen on the validation split, then applied unchanged
to the split scored. Writes eval-<split>.json, eval-<split>.md (Dice/IoU per channel and averaged
under each threshold policy, thresholds, ECE and Brier score, structure metrics with
metrics.structure), eval-<split>-overlays.png and eval-<split>-reliability.png into the run
directory (eval-<split>-last.* for --checkpoint last), and logs the table and overlays to W&B
(eval/<split>/wandb). --split test needs the data's labelled test split (data.test_folder,
data.test_fraction or a labelled <data.root>/test/).
Exit codes: 0 done, 2 missing run/checkpoint/split or bad config (one line), 1 other errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

from seg.cli import ArgumentParser, add_common_arguments, at_least, quiet_environment, run_main

SCRIPT = "scripts/evaluate.py"  # the command provenance records (as typed at the repository root)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="evaluate.py", description=__doc__)
    parser.add_argument("--run", required=True, help="the run directory, e.g. runs/synthetic")
    parser.add_argument("--split", choices=["val", "test"], default="val", help="which labelled split (default val)")
    parser.add_argument(
        "--checkpoint", choices=["best", "last"], default="best", help="best.pt (default) or last.pt (the final model)"
    )
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

    result = evaluate_run(
        args.run, args.split, args.device, args.overlays, args.wandb, not args.no_progress, args.checkpoint
    )
    classes = list(result["metrics"]["per_channel"])
    print(results_table(result["metrics"], classes, f"{result['run']}: {args.split}"))
    name = f"eval-{args.split}{'' if args.checkpoint == 'best' else '-' + args.checkpoint}"
    print(f"written: {Path(args.run) / (name + '.json')} (.md, -overlays.png, -reliability.png)")
    return 0


if __name__ == "__main__":  # the evaluations compare.py --jobs N starts (python -m seg.apps.evaluate)
    sys.exit(run_main(main))
