#!/usr/bin/env python
"""Prepare what a GPU machine needs (wheels, data in parts): python scripts/gpu_bundle.py

A thin wrapper: the command is ``seg.apps.gpu_bundle.main`` (``--help`` lists its options).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg.apps.gpu_bundle import main
from seg.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
