"""Typed specs made from a validated config: what the code below the config takes instead of it.

``mask_spec`` is the one place that reads ``data.mask_format`` (and the keys that go with it).
"""

from __future__ import annotations

from dataclasses import dataclass

from seg.config.schema import Config


@dataclass(frozen=True)
class MaskSpec:
    """What the masks of a dataset are declared to contain.

    fmt: binary | index | multilabel | instance; classes: channel names, in channel order;
    positive_values: raw values of the positive class (binary, instance);
    ignore_index: the index value left out of every count (index masks).
    """

    fmt: str
    classes: tuple[str, ...]
    positive_values: tuple[int, ...] | None = None
    ignore_index: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def mask_spec(cfg: Config) -> MaskSpec:
    """The MaskSpec of ``cfg.data``."""
    data = cfg.data
    positive = tuple(data.positive_values) if data.positive_values is not None else None
    return MaskSpec(data.mask_format, tuple(data.classes), positive, data.ignore_index)
