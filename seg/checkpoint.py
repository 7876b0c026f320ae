"""Checkpoints: written atomically (temporary file, then rename), loaded for resume."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_atomic(state: dict, path: Path) -> None:
    """torch.save to ``path`` so that a crash never leaves a broken file in its place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, device: torch.device | str = "cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=False)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
