"""Train a U-Net: python scripts/train.py --config configs/NAME.yaml [--set key=value ...] [--nproc N]

Overrides use dotted keys and YAML values (--set train.epochs=2 --set loss.clamp=[0.01,100]);
bare key=value arguments work too (what W&B sweep agents pass). Training an existing
run.name resumes it. --nproc N trains with N processes on this machine (DDP, as torchrun
--nproc_per_node N does; train.batch_size is the global batch). Exit codes: 0 done, 2 bad config or
data (one line), 3 diverged, 1 other errors.
"""

from __future__ import annotations

import sys

from seg.cli import ArgumentParser, add_common_arguments, add_override_argument, at_least, quiet_environment, run_main
from seg.launch import NPROC_FLAG, environment_rank, launch, without_nproc

SCRIPT = "scripts/train.py"  # the command provenance records (as typed at the repository root)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, load the config, train (or resume), print the results table; returns the exit code."""
    parser = ArgumentParser(prog="train.py", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (only what differs from configs/base.yaml)")
    add_override_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        NPROC_FLAG,
        type=at_least(1),
        default=1,
        metavar="N",
        help="train with N processes on this machine (DDP through torch.distributed.run; one per GPU)",
    )
    add_common_arguments(parser)
    args, bare = parser.parse_known_args(argv)
    unknown = [a for a in bare if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    quiet_environment()
    from seg.config import load_config

    cfg = load_config(args.config, args.overrides + bare)  # a bad config is refused here, before any launch
    if args.nproc > 1:
        from seg.distributed import check_global_batch

        check_global_batch(cfg.train.batch_size, args.nproc)
        return launch(args.nproc, "seg.apps.train", without_nproc(list(sys.argv[1:] if argv is None else argv)))
    from seg.outputs.tables import print_results
    from seg.training import fit

    summary = fit(cfg, progress=not args.no_progress)
    if environment_rank() == 0:  # under torchrun, rank 0 reports
        print_results(summary, list(cfg.data.classes))
    return 0


if __name__ == "__main__":  # the processes train.py --nproc starts
    sys.exit(run_main(main))
