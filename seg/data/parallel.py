"""Run a function over chunks of items in worker processes, in order, with a progress bar (mask counting, audit).

Workers decode with one OpenCV thread each and OpenCV's log silenced: the images are small,
parallelism is across processes, and unreadable files are reported by the caller, not logged.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import cv2
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Worker processes to use by default: the CPUs this process may run on, at most 8."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(8, os.cpu_count() or 1))


def _quiet_cv2() -> None:
    cv2.setNumThreads(1)  # images are small: threads cost more than they give; parallelism is across processes
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # unreadable files are reported, not logged


@contextmanager
def _cv2_for_masks() -> Iterator[None]:
    threads, level = cv2.getNumThreads(), cv2.utils.logging.getLogLevel()
    _quiet_cv2()
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        cv2.utils.logging.setLogLevel(level)


def map_chunks(
    fn: Callable[[list[T]], R],
    items: Sequence[T],
    workers: int = 1,
    desc: str = "masks",
    progress: bool = True,
    chunk_size: int | None = None,
) -> Iterator[R]:
    """Yield ``fn(chunk)`` for consecutive chunks of ``items``, in order.

    With ``workers > 1`` the chunks run in a process pool (``imap``): only the small
    partial results travel back, so memory stays flat. ``fn`` must be picklable (a
    module-level function or a ``functools.partial`` of one). A tqdm bar counts items.
    """
    workers = max(1, min(workers, len(items)))
    if chunk_size is None:
        chunk_size = max(1, min(32, len(items) // (4 * workers) or 1))
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    # fork (Linux) starts workers in milliseconds; elsewhere spawn. OpenCV is set to one thread in this
    # process before the fork (a child must not inherit OpenCV's thread pool mid-use: it can hang in
    # cv2.setNumThreads), and the pool is made before the bar's thread.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with (
        _cv2_for_masks(),
        context.Pool(workers, initializer=_quiet_cv2) if workers > 1 else nullcontext() as pool,
        tqdm(total=len(items), desc=desc, unit="mask", disable=not progress, leave=False, dynamic_ncols=True) as bar,
    ):
        for chunk, result in zip(chunks, pool.imap(fn, chunks) if pool is not None else map(fn, chunks), strict=False):
            yield result
            bar.update(len(chunk))
