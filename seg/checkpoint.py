"""Checkpoints and result files: written atomically, read back safely.

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers, strings),
so it loads with ``torch.load(weights_only=True)``: loading never runs code from the file.
A file that needs more (a pickled object), a truncated file and a checkpoint of another
architecture are refused with one line naming the file (:class:`CheckpointError`, exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from seg.errors import ConfigError


class CheckpointError(ConfigError):
    """A checkpoint that cannot be loaded safely or does not fit the model; names the file."""


def save_atomic(state: dict, path: Path) -> None:
    """torch.save to ``path`` so that a crash never leaves a broken file in its place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; anything else is a one-line CheckpointError."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = (
                "it holds Python objects other than tensors and plain values (a pickle payload?); "
                "refused without running it"
            )
        else:
            reason = f"not a readable checkpoint (truncated or not a torch file: {str(err).splitlines()[0][:120]})"
        raise CheckpointError(f"{path}: {reason}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a seg checkpoint (expected a dict with a 'model' state_dict)")
    return state


def load_model_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    """``model.load_state_dict(state)``; a mismatch (another architecture) is one line naming the file."""
    try:
        model.load_state_dict(state)
    except RuntimeError:
        expected, got = set(model.state_dict()), set(state)
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        detail = f"{len(missing)} missing and {len(unexpected)} unexpected keys"
        example = (missing or unexpected)[:1]
        if not missing and not unexpected:
            detail = "tensor shapes differ (another encoder or number of classes?)"
        elif example:
            detail += f", e.g. {example[0]}"
        raise CheckpointError(
            f"{path}: the checkpoint does not fit the model of the run's config "
            f"(model.arch/encoder, data.classes): {detail}"
        ) from None
