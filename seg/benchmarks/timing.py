"""What every benchmark section shares: interleaved timing, median and spread, and the table it prints.

Every section prints one table with the columns of :data:`HEADER`: the method, the median over the
repeats, the spread (min .. max), the ratio to the method it is judged against, the target and PASS or
MISS (``(info)`` for rows without a target). Compared methods run interleaved: each round calls every
method once, in an order rotated from round to round, so a load change on a shared machine hits them alike.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import cv2
import torch

SIZES = ("full", "quick", "tiny")  # tiny: seconds, for tests (structure and agreement, never timings)
HEADER = [
    "| method | median | spread (min .. max) | ratio | target | result |",
    "|---|---|---|---|---|---|",
]


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one method (in one unit)."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values) -> Spread:
        values = tuple(float(v) for v in values)
        if not values:
            raise ValueError("Spread.of: no measurement")
        return cls(values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def scaled(self, factor: float) -> Spread:
        return Spread(tuple(v * factor for v in self.values))

    def per_second(self, items: float) -> Spread:
        """Seconds per call -> ``items`` per second (the spread of rates, each from one repeat)."""
        return Spread(tuple(items / v for v in self.values))


def interleave(
    methods: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, Spread]:
    """Seconds per call of each method: ``warmup`` untimed rounds, then ``repeats`` timed rounds, each calling
    every method once in an order rotated by one from the round before. ``sync`` (e.g. cuda.synchronize) runs
    before each clock read."""
    names = list(methods)
    wait = sync or (lambda: None)
    for _ in range(warmup):
        for name in names:
            methods[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            wait()
            start = time.perf_counter()
            methods[name]()
            wait()
            seconds[name].append(time.perf_counter() - start)
    return {name: Spread.of(values) for name, values in seconds.items()}


def verdict(passed: bool | None) -> str:
    return "(info)" if passed is None else ("PASS" if passed else "MISS")


def row(
    method: str,
    spread: Spread,
    unit: str,
    ratio: str = "",
    target: str = "",
    passed: bool | None = None,
    digits: int = 1,
) -> str:
    """One table row of :data:`HEADER`: values in ``unit`` (e.g. "ms", "images/s") with ``digits`` decimals."""

    def fmt(value: float) -> str:
        return f"{value:.{digits}f}"

    return (
        f"| {method} | {fmt(spread.median)} {unit} | {fmt(spread.min)} .. {fmt(spread.max)} | {ratio} | "
        f"{target} | {verdict(passed)} |"
    )


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """torch and cv2 limited to ``count`` threads inside the block (restored after)."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
