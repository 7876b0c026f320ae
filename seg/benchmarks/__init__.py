"""Benchmark sections for scripts/benchmark.py.

Each section is a module here with ``NAME`` (str), ``TARGET`` (one line saying the
target) and ``run(size: str) -> list[str]`` (size: full, quick or tiny) returning Markdown lines: a
paragraph saying how it measured, then one table in the format of :mod:`seg.benchmarks.timing`
(method, median, spread, ratio, target, PASS/MISS), the compared methods interleaved in one run.
Add a new section by writing its module and listing it in ``SECTIONS``.
"""

import importlib

SECTIONS = [
    "border_map",
    "audit",
    "metrics",
    "step_overhead",
    "training_loop",
    "data_loading",
    "validation",
    "training_speed",
    "gpu",  # last: its compile rows take minutes; without a CUDA device it prints the placeholder
    # more sections are added here, one line each
]


def load_sections(names=None):
    """Import the section modules, in the order of ``SECTIONS``."""
    chosen = names or SECTIONS
    return [importlib.import_module(f"seg.benchmarks.{name}") for name in chosen]
