"""Per-sample weight maps cached in memory and as .npy files, keyed by source file and parameters."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


class WeightMapCache:
    """Per-sample weight maps kept in memory and, with a ``cache_dir``, as float32 .npy files.

    A map is keyed by the sha1 of (resolved path, file size, mtime_ns, sorted params), so
    it is recomputed when the source file or the parameters change. Files are written to a
    temporary file in ``cache_dir`` and moved into place with os.replace, so concurrent
    DataLoader workers never read a half-written map. ``cache_dir=None`` keeps maps in
    memory only. The in-memory store is unbounded (one map per sample).
    """

    def __init__(self, cache_dir: str | Path | None = None):
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._memory: dict[str, np.ndarray] = {}

    @staticmethod
    def key(key_path: str | Path, params: dict) -> str:
        """sha1 hex digest of (resolved path, size, mtime_ns, sorted params)."""
        path = Path(key_path).resolve()
        stat = path.stat()
        payload = json.dumps([str(path), stat.st_size, stat.st_mtime_ns, params], sort_keys=True, default=repr)
        return hashlib.sha1(payload.encode()).hexdigest()

    def get(self, key_path: str | Path, params: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached map for (key_path, params), calling ``compute()`` on a miss.

        Returns a float32 array (a fresh copy, safe to modify).
        """
        digest = self.key(key_path, params)
        stored = self._memory.get(digest)
        if stored is None:
            stored = self._load(digest)
        if stored is None:
            stored = np.ascontiguousarray(compute(), dtype=np.float32)
            self._save(digest, stored)
        stored.flags.writeable = False
        self._memory[digest] = stored
        return stored.copy()

    def _path(self, digest: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{digest}.npy"

    def _load(self, digest: str) -> np.ndarray | None:
        path = self._path(digest)
        if path is None or not path.exists():
            return None
        return np.load(path)

    def _save(self, digest: str, array: np.ndarray) -> None:
        path = self._path(digest)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{digest}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, array)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
