"""Tests for seg/weighting/cache.py: one computation per (file, params), kept on disk or in memory."""

import os

import numpy as np

from seg.weighting.cache import WeightMapCache

# ------------------------------------------------------------------------------------- cache


def test_cache_computes_once_per_key(tmp_path):
    source = tmp_path / "mask.png"
    source.write_bytes(b"12345")
    calls = []

    def compute():
        calls.append(1)
        return np.full((2, 3), len(calls), np.float64)

    cache = WeightMapCache(tmp_path / "cache")
    first = cache.get(source, {"w0": 10.0, "sigma": 5.0}, compute)
    assert first.dtype == np.float32 and first.tolist() == [[1.0] * 3] * 2
    first[:] = 99  # the caller gets a copy: the cache is unchanged
    again = cache.get(source, {"sigma": 5.0, "w0": 10.0}, compute)  # same params, other order
    assert len(calls) == 1 and again.tolist() == [[1.0] * 3] * 2
    # a new cache on the same folder reads the file instead of computing
    assert WeightMapCache(tmp_path / "cache").get(source, {"w0": 10.0, "sigma": 5.0}, compute)[0, 0] == 1.0
    assert len(calls) == 1
    cache.get(source, {"w0": 5.0, "sigma": 5.0}, compute)  # params changed
    assert len(calls) == 2
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # file changed
    assert cache.get(source, {"w0": 10.0, "sigma": 5.0}, compute)[0, 0] == 3.0
    assert len(calls) == 3
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 3 and all(name.endswith(".npy") and not name.startswith(".") for name in files)


def test_cache_in_memory_only(tmp_path):
    source = tmp_path / "mask.png"
    source.write_bytes(b"1")
    calls = []
    cache = WeightMapCache(None)
    for _ in range(3):
        cache.get(source, {}, lambda: calls.append(1) or np.ones((2, 2)))
    assert len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]
