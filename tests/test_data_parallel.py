"""seg/data/parallel.py: chunks come back in order, in worker processes or not; OpenCV settings are restored."""

import os
from functools import partial

import cv2
import pytest

from seg.data.parallel import default_workers, map_chunks


def _chunk_sum(offset: int, chunk: list[int]) -> tuple[int, int]:
    """Module-level, so that it pickles: the chunk's sum plus ``offset``, and the process that ran it."""
    return offset + sum(chunk), os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_map_chunks_yields_every_chunk_in_order(workers):
    threads = cv2.getNumThreads()
    results = list(map_chunks(partial(_chunk_sum, 100), list(range(10)), workers, progress=False, chunk_size=3))
    assert [total for total, _ in results] == [103, 112, 121, 109]  # [0,1,2] [3,4,5] [6,7,8] [9]
    assert ({pid for _, pid in results} == {os.getpid()}) == (workers == 1)
    assert cv2.getNumThreads() == threads


def test_default_workers_is_between_1_and_8():
    assert 1 <= default_workers() <= 8
