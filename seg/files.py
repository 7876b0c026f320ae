"""Result files: written atomically (temporary file, then rename), JSON strictly.

Strict JSON: NaN and infinities become null (a value that is undefined), never a bare ``NaN``
that JSON readers refuse; ``allow_nan=False`` is the last check. No torch import here, so the
audit and the comparison can use it without loading torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from seg.errors import ConfigError


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks (checkpoints need not fit in memory twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash never leaves a half-written file in its place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def strict(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (recursively); arrays and tensors as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars, tensors
        return strict(value.tolist())
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``value`` (null where a value is undefined)."""
    return json.dumps(strict(value), indent=indent, allow_nan=False)


def write_json_atomic(path: Path, value: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json_text(value, indent) + "\n")


def make_folder(path: Path, what: str) -> Path:
    """``mkdir -p path``; a folder that cannot be created (under a file, no permission) is a user
    error naming ``what`` (the flag or key that chose it) and the path."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocking = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        reason = f"{blocking} is a file" if blocking else (err.strerror or str(err))
        raise ConfigError(f"{what}: cannot create {path} ({reason}); choose a writable folder") from None
    return path
