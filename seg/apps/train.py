"""Train a U-Net: python scripts/train.py --config configs/NAME.yaml [--set key=value ...]

Overrides use dotted keys and YAML values (--set train.epochs=2 --set loss.clamp=[0.01,100]);
bare key=value arguments work too (what W&B sweep agents pass). Training an existing
run.name resumes it. Exit codes: 0 done, 2 bad config or data (one line), 1 other errors.
"""

from __future__ import annotations

from pathlib import Path

from seg.cli import ArgumentParser, add_common_arguments, add_override_argument, quiet_environment

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train.py"  # the command provenance records


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, load the config, train (or resume), print the results table; returns the exit code."""
    parser = ArgumentParser(prog="train.py", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (only what differs from configs/base.yaml)")
    add_override_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_common_arguments(parser)
    args, bare = parser.parse_known_args(argv)
    unknown = [a for a in bare if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    quiet_environment()
    from seg.config import load_config
    from seg.outputs.tables import print_results
    from seg.training import fit

    cfg = load_config(args.config, args.overrides + bare)
    summary = fit(cfg, progress=not args.no_progress)
    print_results(summary, list(cfg.data.classes))
    return 0
