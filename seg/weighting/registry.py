"""Weighting strategies by name: ``@register("name")`` on a :class:`Strategy`, ``get_strategy(name)``.

This module is the one reader of ``loss.weighting`` (:func:`strategy_for`). The built-in strategies
live one per module in :mod:`seg.weighting.strategies`, imported on the first look-up: adding a
strategy is adding a module there (and its tests). A strategy is an ``nn.Module`` built from the
training split's counts (:class:`seg.data.counts.MaskCounts`); its tensors are buffers, so they
follow ``.to(device)`` and ``state_dict()`` inside the criterion (:class:`seg.losses.Criterion`).
What a strategy owns:

- ``check_config(loss, mask_format)``: its config checks (raise ValueError with the message);
- ``needs_instances(loss)``: whether instance label files must be found beside the masks;
- ``sample_map(loss, cache_dir)``: a per-sample map function for the dataset, or None;
- ``batch_weight(batch)``: None, () scalar, (C,1,1) or a [B,1,H,W] map, without host sync;
- ``report(train, class_names)``: its keys of summary.json (``pos_weight``, and for maps more).
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from seg.config.specs import mask_spec
from seg.errors import ConfigError
from seg.weighting.formulas import negative_counts, per_channel_pos_weight

if TYPE_CHECKING:
    from seg.config.schema import Config, LossConfig
    from seg.config.specs import MaskSpec
    from seg.data.counts import MaskCounts

SampleMap = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]  # (sample, target, valid) -> float32 [H,W]
S = TypeVar("S", bound="type[Strategy]")

_STRATEGIES: dict[str, type[Strategy]] = {}
_BUILTIN_LOADED = False


class Strategy(nn.Module):
    """A weighting strategy: no weight by default; subclasses override what they need."""

    name: ClassVar[str] = ""

    def __init__(self, counts: MaskCounts, spec: MaskSpec, loss: LossConfig) -> None:
        super().__init__()

    @classmethod
    def check_config(cls, loss: LossConfig, mask_format: str) -> None:
        """Raise ValueError (the message names the keys) when ``loss`` does not fit this strategy."""

    @classmethod
    def needs_instances(cls, loss: LossConfig) -> bool:
        """True when instance label files (``instances/`` beside ``masks/``) are needed."""
        return False

    @classmethod
    def sample_map(cls, loss: LossConfig, cache_dir: Path | None) -> SampleMap | None:
        """A function (sample, target, valid) -> float32 [H,W] the dataset adds as ``weight_map``, or None."""
        return None

    def batch_weight(self, batch: dict) -> torch.Tensor | None:
        """The weight of one batch: None, a () scalar, (C,1,1) or a [B,1,H,W] map (no host sync)."""
        return None

    def report(self, train: dict, class_names: Sequence[str]) -> dict:
        """This strategy's keys of summary.json after an epoch (``train``: what train_one_epoch returned)."""
        return {"pos_weight": None}


def register(name: str) -> Callable[[S], S]:
    """Class decorator: register a :class:`Strategy` subclass under ``name`` (a new name only)."""

    def decorator(cls: S) -> S:
        if name in _STRATEGIES:
            raise ValueError(f"weighting strategy {name!r} is already registered ({_STRATEGIES[name].__qualname__})")
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return decorator


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (for strategies registered at run time, e.g. by tests)."""
    _STRATEGIES.pop(name, None)


def _load_builtin() -> None:
    """Import every module of :mod:`seg.weighting.strategies` once: each registers its strategy."""
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    from seg.weighting import strategies

    for module in sorted(pkgutil.iter_modules(strategies.__path__), key=lambda m: m.name):
        importlib.import_module(f"{strategies.__name__}.{module.name}")
    _BUILTIN_LOADED = True


def strategy_names() -> tuple[str, ...]:
    """The registered strategy names: the values ``loss.weighting`` accepts."""
    _load_builtin()
    return tuple(sorted(_STRATEGIES))


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``."""
    _load_builtin()
    if name not in _STRATEGIES:
        raise ValueError(f"unknown weighting strategy {name!r}; registered: {', '.join(_STRATEGIES)}")
    return _STRATEGIES[name]


def strategy_for(loss: LossConfig) -> type[Strategy]:
    """The strategy class that ``loss.weighting`` names."""
    return get_strategy(loss.weighting)


def check_config(cfg: Config) -> None:
    """A validated config's strategy checks: a registered ``loss.weighting``, and what the strategy
    refuses (border_map without instances). ConfigError naming the key; runs before any file is read
    or written (:func:`seg.training.fit`, the comparison's ``resolve_configs``)."""
    names = strategy_names()
    if cfg.loss.weighting not in names:
        raise ConfigError(f"key 'loss.weighting': must be one of {', '.join(names)}, got {cfg.loss.weighting!r}")
    try:
        strategy_for(cfg.loss).check_config(cfg.loss, mask_spec(cfg).fmt)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_strategy(loss: LossConfig, counts: MaskCounts, spec: MaskSpec) -> Strategy:
    """The strategy of ``loss`` with its dataset-level weights (from training-split counts only)."""
    return strategy_for(loss)(counts, spec, loss)


# ---------------------------------------------------------------- helpers for the strategies


def count_tensors(counts: MaskCounts, negatives: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) per channel as float64 (C,) tensors; negatives as ``loss.negatives`` defines them."""
    positive = torch.as_tensor(counts.positive_pixels, dtype=torch.float64)
    negative = negative_counts(
        positive,
        torch.tensor(float(counts.valid_pixels), dtype=torch.float64),
        torch.tensor(float(counts.all_zero_pixels), dtype=torch.float64),
        negatives,
    )
    return positive, negative


def dataset_pos_weight(counts: MaskCounts, negatives: str, clamp: tuple[float, float]) -> torch.Tensor:
    """neg_c / pos_c over the training split, clamped: (C,1,1) float32."""
    return per_channel_pos_weight(*count_tensors(counts, negatives), clamp)


def warn_empty_channels(counts: MaskCounts, clamp: tuple[float, float]) -> None:
    """Warn about channels without positive pixels: their pos_weight is the clamp maximum."""
    positive = np.asarray(counts.positive_pixels)
    if (positive == 0).any():
        empty = [str(c) for c in np.flatnonzero(positive == 0)]
        warnings.warn(
            f"channel(s) {', '.join(empty)} have no positive pixels in the training split: "
            f"their pos_weight is clamped to {clamp[1]}",
            stacklevel=3,
        )
