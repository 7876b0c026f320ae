#!/usr/bin/env python
"""Run the benchmark sections side by side and print Markdown (kept in BENCHMARKS.md).

A thin wrapper: the command is ``seg.apps.benchmark.main`` (``--help`` lists its options).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg.apps.benchmark import main
from seg.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
