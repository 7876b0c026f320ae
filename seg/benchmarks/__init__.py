"""Benchmark sections for scripts/benchmark.py.

Each section is a module here with ``NAME`` (str), ``TARGET`` (one line saying the
target) and ``run(quick: bool) -> list[str]`` returning Markdown lines (a small table
with the ratio measured side by side in one run, and PASS/FAIL against the target).
Add a new section by writing its module and listing it in ``SECTIONS``.
"""

import importlib

SECTIONS = [
    "border_map",
    "audit",
    "metrics",
    # more sections are added here, one line each
]


def load_sections(names=None):
    """Import the section modules, in the order of ``SECTIONS``."""
    chosen = names or SECTIONS
    return [importlib.import_module(f"seg.benchmarks.{name}") for name in chosen]
