#!/usr/bin/env python
"""Train a U-Net: python scripts/train.py --config configs/NAME.yaml [--set key=value ...]

A thin wrapper: the command is ``seg.apps.train.main`` (``--help`` lists its options).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg.apps.train import main
from seg.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
