"""Typed results: a run's summary.json, the score blocks of its ``val``, and eval-<split>.json, as dataclasses.

``from_dict`` is strict: a missing or unknown key is a ConfigError naming the key (and the file, when read
with :meth:`RunSummary.read` / :meth:`EvalResult.read`); ``to_dict`` gives back the JSON content exactly,
key order included, so a file written from it is byte-identical to the one it was read from.

Fields that default to None are keys that some files lack (written by older versions of seg, or
only by some strategies): None means absent, and ``to_dict`` leaves them out. Fields without a
default are always written, null included (a score is null where it is undefined).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from seg.errors import ConfigError

T = TypeVar("T", bound="Record")
EXTRA = "extra"  # the field of a record that keeps keys it does not declare (written after the others)


class Record:
    """A JSON object with a fixed set of keys: strict ``from_dict``, exact ``to_dict``."""

    @classmethod
    def from_dict(cls: type[T], data: Any, source: str | Path | None = None) -> T:
        """Build from the parsed JSON; ``source`` (the file it was read from) starts every error message."""
        return _build(cls, data, str(source or cls.__name__), "")

    def to_dict(self) -> dict[str, Any]:
        """The JSON content, in the key order of the files."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if field.name == EXTRA:  # keys a strategy reports beyond the known ones, written last
                out.update(value)
                continue
            if value is None and field.default is None:  # an optional key this file does not have
                continue
            out[field.name] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _without_none(hint: Any) -> Any:
    """``X`` for ``X | None``; other hints as they are."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [h for h in typing.get_args(hint) if h is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and not typing.get_args(hint) and issubclass(hint, Record)


def _refuse(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {f'key {key!r}: ' if key else ''}{problem}")


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    """``value`` as the type ``hint`` says: a Record, a dict or list of Records, or as it is."""
    hint = _without_none(hint)
    if value is None:
        return None
    if _is_record(hint):
        return _build(hint, value, source, key)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is dict and _is_record(args[1]):
        if not isinstance(value, dict):
            raise _refuse(source, key, f"expected an object, got {type(value).__name__}")
        return {k: _build(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if origin is list and _is_record(args[0]):
        if not isinstance(value, list):
            raise _refuse(source, key, f"expected a list, got {type(value).__name__}")
        return [_build(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _build(cls: type[T], data: Any, source: str, key: str) -> T:
    """``cls`` from the JSON object ``data`` found at ``key`` (dotted, "" for the whole file) of ``source``."""
    if not isinstance(data, dict):
        raise _refuse(source, key, f"expected an object ({cls.__name__}), got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{key}." if key else ""
    missing = [
        prefix + n
        for n, f in fields.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise ConfigError(f"{source}: missing key{plural} {', '.join(map(repr, missing))} ({cls.__name__})")
    unknown = [prefix + k for k in data if k not in fields]
    if unknown and EXTRA in fields:  # a record that keeps what it does not know (RunSummary: strategy keys)
        extra = {k: data[k] for k in data if k not in fields}
        data = {k: v for k, v in data.items() if k in fields} | {EXTRA: extra}
        unknown = []
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"{source}: unknown key{plural} {', '.join(map(repr, unknown))} (not in {cls.__name__})")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], data[name], source, prefix + name) for name in fields if name in data}
    return cls(**values)


def read_record(cls: type[T], path: str | Path) -> T:
    """``cls`` from the JSON file ``path``; an unreadable file or a bad key is a ConfigError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable JSON file ({err})") from None
    return cls.from_dict(data, path)


# ------------------------------------------------------------------ score blocks (the ``val`` block)


@dataclass(frozen=True, kw_only=True)
class DiceIou(Record):
    """Dice and IoU, null where undefined under the empty policy."""

    dice: float | None
    iou: float | None


@dataclass(frozen=True, kw_only=True)
class ScoreBlock(Record):
    """Scores at one threshold policy (an entry of ``val.by_threshold``); ``note`` in the tuned block only."""

    dice: float | None  # macro: mean over channels
    iou: float | None
    micro: DiceIou
    per_image: DiceIou
    per_channel: dict[str, DiceIou]
    empty_image_fp_rate: dict[str, float | None]
    thresholds: dict[str, float]  # probability per channel
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class Calibration(Record):
    """``val.ece``: ECE per channel, raw and prior-corrected (and Platt-scaled where Platt parameters fitted
    on validation were applied), and their means over channels; the Brier score of each variant."""

    bins: int
    raw: dict[str, float | None]
    raw_mean: float | None
    prior_corrected: dict[str, float | None]
    prior_corrected_mean: float | None
    platt: dict[str, float | None] | None = None
    platt_mean: float | None = None
    brier: dict[str, dict[str, float | None]] | None = None  # variant -> channel -> Brier score
    brier_mean: dict[str, float | None] | None = None  # variant -> mean over channels
    platt_parameters: dict[str, dict[str, float]] | None = None  # channel -> {a, b}: sigmoid(a * logit + b)
    platt_fitted_on: str | None = None


@dataclass(frozen=True, kw_only=True)
class StructureScores(Record):
    """``val.structure``: structure metrics of the final predictions (seg.scoring.structure_scores)."""

    metrics: list[str]
    objects_from: str
    connectivity: int
    num_images: int
    note: str
    by_threshold: dict[str, dict[str, Any]]  # policy -> {"mean": {key: x}, "per_channel": {name: {key: x}}}


@dataclass(frozen=True, kw_only=True)
class Scores(ScoreBlock):
    """The ``val`` block (summary.json) or ``metrics`` (eval-<split>.json): the scores at ``threshold``
    (metrics.threshold), then every policy in ``by_threshold`` and the calibration."""

    threshold: str
    empty_policy: str
    num_images: int
    by_threshold: dict[str, ScoreBlock]
    ece: Calibration
    structure: StructureScores | None = None  # with metrics.structure (the last epoch's validation, evaluation)


# ------------------------------------------------------------------ a run's summary.json


@dataclass(frozen=True, kw_only=True)
class TrainScores(Record):
    loss: float | None
    dice: float | None


@dataclass(frozen=True, kw_only=True)
class LrSegment(Record):
    """A cosine segment of the learning-rate schedule (seg.schedule)."""

    epochs: list[int]  # [start, end]
    lr_start: float


@dataclass(frozen=True, kw_only=True)
class MapStats(Record):
    mean: float
    max: float


@dataclass(frozen=True, kw_only=True)
class Provenance(Record):
    """Where a result came from (seg.provenance): commit, command, library versions, machine."""

    commit: str | None
    dirty: bool | None
    command: str
    versions: dict[str, str | None]
    # type, cpu, cpu_count, torch_threads, processes, name (GPU name or CPU model), and cuda on a GPU: kept as
    # written, since "cuda" may be null (a ROCm build) where a CPU run has no such key
    device: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class RunSummary(Record):
    """summary.json: the last epoch's results of a training run, and how it was trained."""

    best_epoch: int | None
    epochs_completed: int
    weighting: str
    apply_as: str
    normalize: bool
    negatives: str
    pos_weight: float | list[float] | None  # as configured or computed (per_batch: the mean of the last epoch)
    effective_pos_weight: list[float]  # per channel, as applied in the last epoch
    mean_applied_weight: float
    val: Scores
    train: TrainScores
    wall_time_per_epoch_s: float | None
    lr_schedule: list[LrSegment] | None = None  # absent in summaries from before schedules were recorded
    # threshold policy -> macro validation Dice of every epoch (absent in summaries from before it was recorded)
    val_dice_curve: dict[str, list[float | None]] | None = None
    val_dice_epochs: list[int] | None = None  # the epochs of val_dice_curve (train.val_every; absent: every epoch)
    stats_source: str
    stats_sha256: str | None = None  # with loss.stats_file
    weight_map_stats: dict[str, MapStats] | None = None  # class_map, border_map
    class_weights: list[float] | None = None  # class_map, border_map
    provenance: Provenance | None = None  # absent in summaries from before provenance was recorded
    loss_terms: list[dict[str, Any]] | None = None  # loss.terms with defaults filled in (absent: bce alone)
    sampling: dict[str, Any] | None = None  # data.sampling foreground: fraction and channel rule (absent: uniform)
    # what a strategy reports beyond the keys above (a strategy added to the registry may report its own)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> RunSummary:
        """A summary.json (or its copy under experiments/results/*/runs/); errors name the file."""
        return read_record(cls, path)


# ------------------------------------------------------------------ eval-<split>.json


@dataclass(frozen=True, kw_only=True)
class SplitInfo(Record):
    """A set of images: its split, how many, and a hash of their sorted stems (sha256 of the stems
    joined by newlines), so two files can be checked to be about the same images."""

    split: str
    num_images: int
    stems_sha256: str


@dataclass(frozen=True, kw_only=True)
class ChosenOn(SplitInfo):
    """Where the evaluation's choices were made, and what was chosen there."""

    thresholds: dict[str, float]  # tuned probability threshold per channel
    platt: dict[str, dict[str, float]] | None  # channel -> {a, b}; null without calibration pixels


@dataclass(frozen=True, kw_only=True)
class EvalResult(Record):
    """eval-<split>.json: a run's checkpoint evaluated on a split (seg.run_evaluation)."""

    run: str
    split: str
    checkpoint: str
    epoch: int | None
    effective_pos_weight: list[float]
    loss: float | None
    metrics: Scores
    provenance: Provenance | None = None
    split_source: str | None = None  # where the scored split came from, in words
    scored_on: SplitInfo | None = None  # the scored images
    chosen_on: ChosenOn | None = None  # where thresholds and Platt parameters were chosen
    per_image: dict[str, dict[str, dict[str, float | None]]] | None = None  # policy -> stem -> scores

    @classmethod
    def read(cls, path: str | Path) -> EvalResult:
        return read_record(cls, path)
