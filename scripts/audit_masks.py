#!/usr/bin/env python
"""Audit a dataset's masks: per-channel counts, problems, and the pos_weight to use.

A thin wrapper: the command is ``seg.apps.audit.main`` (``--help`` lists its options).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg.apps.audit import main
from seg.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
