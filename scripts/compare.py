#!/usr/bin/env python
"""Compare weighting strategies: every strategy x seed of an experiment, then honest statistics.

A thin wrapper: the command is ``seg.apps.compare.main`` (``--help`` lists its options).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg.apps.compare import main
from seg.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
