"""The comparison's manifest, ``experiments/results/<experiment>-<profile>/experiment.json``, as a typed record:
strict ``from_dict`` naming the file and key, exact ``to_dict`` (see :class:`seg.results.Record`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seg.files import json_text, make_folder
from seg.results import Record, read_record

MANIFEST = "experiment.json"  # in the results folder, beside runs/<run>.json


@dataclass(frozen=True, kw_only=True)
class PlannedRunInfo(Record):
    """An entry of ``runs``: a run of the grid, its strategy and seed."""

    name: str
    strategy: str
    seed: int


@dataclass(frozen=True, kw_only=True)
class DataInfo(Record):
    """``data``: where the images are, as configured (unexpanded), and how the split was drawn."""

    root: str
    mask_format: str
    split_seed: int


@dataclass(frozen=True, kw_only=True)
class TestInfo(Record):
    """``test``: the held-out test split every run's final model is scored on (choices made on validation)."""

    split: str
    source: str  # where it comes from, in words
    num_images: int
    checkpoint: str  # which checkpoint is scored: last (the fixed budget's final model)
    objects: str | None = None  # what structure metrics score as objects, in words (with metrics.structure)


@dataclass(frozen=True, kw_only=True)
class Budget(Record):
    """``budget``: what every run of the grid trains for, and on which model."""

    epochs: int
    image_size: int
    samples_per_epoch: int | None
    batch_size: int
    max_steps_per_epoch: int | None
    max_val_images: int | None
    arch: str
    encoder: str
    encoder_weights: str | None
    lr: float
    normalize: bool


@dataclass(frozen=True, kw_only=True)
class WandbInfo(Record):
    """``wandb``: where the results table goes (not when the mode is disabled)."""

    mode: str
    project: str
    group: str | None
    out_dir: str


@dataclass(frozen=True, kw_only=True)
class TrainedWith(Record):
    """How a run was trained: ``--jobs`` and the machine, in words (its wall times depend on both)."""

    jobs: int
    machine: str | None


@dataclass(frozen=True, kw_only=True)
class Manifest(Record):
    """experiment.json: what results.md needs besides the run summaries.

    ``trained_with`` (per run) is absent from manifests written before per-run records, which have
    the top-level ``jobs`` and ``machine`` instead (one record for the whole grid).
    """

    experiment: str
    profile: str
    title: str | None
    experiment_file: str
    base: str
    command: str
    aggregate_command: str
    results_dir: str | None  # relative to the repository; null for a folder outside it
    strategies: dict[str, list[str]]  # name -> its overrides
    seeds: list[int]
    reference: str | None
    runs: list[PlannedRunInfo]
    classes: list[str]
    data: DataInfo
    budget: Budget
    train_positive_fraction: dict[str, float]
    wandb: WandbInfo
    trained_with: dict[str, TrainedWith] | None = None
    test: TestInfo | None = None  # absent without a labelled test split (and in older manifests)
    jobs: int | None = None  # older manifests: one record for the whole grid
    machine: str | None = None

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """An experiment.json; errors name the file and the key."""
        return read_record(cls, path)

    def write(self, results_dir: Path) -> None:
        """``results_dir/experiment.json`` (the folder is created)."""
        make_folder(results_dir, "--out")
        (results_dir / MANIFEST).write_text(json_text(self.to_dict()) + "\n")

    @property
    def title_text(self) -> str:
        """The heading: the experiment's title, or its name."""
        return self.title or self.experiment

    def training_records(self) -> list[TrainedWith]:
        """How the runs were trained: one record per run, or the grid's one record in an older manifest."""
        if self.trained_with:
            return list(self.trained_with.values())
        if self.jobs is not None:
            return [TrainedWith(jobs=self.jobs, machine=self.machine)]
        return []
