#!/usr/bin/env python
"""Evaluate a run's best checkpoint: python scripts/evaluate.py --run runs/RUN_NAME [--split val|test]

A thin wrapper: the command is ``seg.apps.evaluate.main`` (``--help`` lists its options).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg.apps.evaluate import main
from seg.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
