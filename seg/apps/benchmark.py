"""Run the benchmark sections side by side and print Markdown (kept in BENCHMARKS.md).

python scripts/benchmark.py            # full sizes
python scripts/benchmark.py --quick    # small sizes, for a smoke run
python scripts/benchmark.py --only border_map
python scripts/benchmark.py --only gpu   # the CUDA section (without a CUDA device: its placeholder)
python scripts/benchmark.py --tiny     # seconds: for tests (the tables' structure, never the timings)
"""

from __future__ import annotations

import os
import platform
import sys

from seg.benchmarks import SECTIONS, load_sections
from seg.cli import ArgumentParser
from seg.provenance import cpu_model

SCRIPT = "scripts/benchmark.py"  # the command provenance records (as typed at the repository root)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="benchmark.py", description=__doc__)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes (under 3 minutes on 2 cores)")
    sizes.add_argument("--tiny", action="store_true", help="tiny sizes, for tests: the tables, not the timings")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    import torch

    print("# Benchmarks\n")
    print(
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs; torch {torch.__version__}; "
        f"{size} sizes. Ratios are measured side by side in one run.\n"
    )
    for section in load_sections(args.only):
        print(f"## {section.NAME}\n")
        print(f"Target: {section.TARGET}\n")
        for line in section.run(size):
            print(line)
        print()
        sys.stdout.flush()
    return 0
