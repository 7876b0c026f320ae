"""The console commands of an installed seg (``pip install .``), declared in pyproject.toml ``[project.scripts]``.

``seg-train``, ``seg-audit``, ``seg-evaluate``, ``seg-compare`` and ``seg-benchmark`` are the commands of
``scripts/train.py``, ``audit_masks.py``, ``evaluate.py``, ``compare.py`` and ``benchmark.py``: each runs its
app's ``main(argv)`` through :func:`seg.cli.run_main`, with the same options and exit codes (0 done, 2 bad
input with one line, 3 diverged, 1 other). The app is imported when its command runs, so ``--help`` stays quick.
"""

from __future__ import annotations

import importlib

from seg.cli import run_main


def run_app(app: str, command: str) -> int:
    """Run ``seg.apps.<app>.main`` on the command line's arguments; provenance records ``command``."""
    return run_main(importlib.import_module(f"seg.apps.{app}").main, program=command)


def train() -> int:
    return run_app("train", "seg-train")


def audit() -> int:
    return run_app("audit", "seg-audit")


def evaluate() -> int:
    return run_app("evaluate", "seg-evaluate")


def compare() -> int:
    return run_app("compare", "seg-compare")


def benchmark() -> int:
    return run_app("benchmark", "seg-benchmark")
