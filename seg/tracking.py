"""Experiment tracking: metrics.jsonl, and W&B (the only module that imports wandb).

W&B is offline by default: runs are written under ``<run_dir>/wandb/`` and can be
uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``. A W&B failure
is reported once as a warning and never stops training.

What a training run holds (``job_type`` train): per-epoch rows with ``epoch`` as their step
metric (``define_metric``: ``val/dice`` also kept as its maximum in the summary), per-step rows
(``step/loss``, ``step/lr``, ``step/weight``) against ``trainer/step``, validation overlays, and
the checkpoints ``best.pt`` and ``last.pt`` as versions of one model artifact (aliases
``best`` and ``latest``) with metadata. Evaluations (``eval``), comparisons (``compare``) and
audits (``audit``) are runs of their own.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np

from seg.files import file_sha256, json_text

RUN_ID_FILE = "wandb_run_id.txt"


def append_metrics(path: Path, row: dict) -> None:
    """Append one epoch's row to metrics.jsonl (strict JSON: null for NaN or infinity)."""
    with path.open("a") as handle:
        handle.write(json_text(row, indent=None) + "\n")


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Keep rows up to ``last_epoch`` (a resumed run rewrites what came after its checkpoint)."""
    rows = [row for row in read_metrics(path) if row.get("epoch", 0) <= last_epoch]
    path.write_text("".join(json_text(row, indent=None) + "\n" for row in rows))


EPOCH, STEP = "epoch", "trainer/step"  # the step metrics of epoch rows and of per-step rows
STEP_PREFIX = "step/"
UNLABELLED = "none"  # the class label of index-mask pixels in no class (W&B mask value 0)


def common_size(images: list[np.ndarray], masks: list[list[np.ndarray]]) -> tuple[list, list]:
    """Images (and their masks) padded at the bottom and right to the largest height and width:
    W&B shows a list of images of one size only (and warns for each step otherwise)."""
    height, width = max(im.shape[0] for im in images), max(im.shape[1] for im in images)

    def pad(array: np.ndarray) -> np.ndarray:
        extra = [(0, height - array.shape[0]), (0, width - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, extra)

    return [pad(im) for im in images], [[pad(m) for m in group] for group in masks]


def label_map(channels: np.ndarray) -> np.ndarray:
    """One-hot [H,W,C] in {0,1} -> uint8/uint16 [H,W]: 1 + the channel set, 0 where none is."""
    labels = channels.argmax(axis=-1) + 1
    labels[channels.max(axis=-1) == 0] = 0
    return labels.astype(np.uint8 if channels.shape[-1] < 255 else np.uint16)


def overlay_masks(truth: np.ndarray, pred: np.ndarray, class_names: list[str], index: bool) -> dict:
    """W&B masks of one example. Index masks (one class per pixel): one ``predictions`` and one
    ``ground_truth`` label map with every class's label. Multi-label masks (channels may overlap):
    one pair per channel, ``pred/<name>`` and ``truth/<name>``."""
    if index:
        labels = {0: UNLABELLED} | {c + 1: name for c, name in enumerate(class_names)}
        return {
            "predictions": {"mask_data": label_map(pred), "class_labels": labels},
            "ground_truth": {"mask_data": label_map(truth), "class_labels": labels},
        }
    masks = {}
    for c, name in enumerate(class_names):
        labels = {0: "background", 1: name}
        masks[f"pred/{name}"] = {"mask_data": pred[..., c].astype(np.uint8), "class_labels": labels}
        masks[f"truth/{name}"] = {"mask_data": truth[..., c].astype(np.uint8), "class_labels": labels}
    return masks


class Tracker:
    """A W&B run that never raises: every call is guarded, failures warn once."""

    def __init__(
        self,
        run_dir: Path,
        mode: str,
        project: str,
        group: str | None,
        name: str,
        config: dict,
        tags: list[str] | None = None,
        job_type: str = "train",
    ) -> None:
        self.run = None
        self.mode = mode
        self._warned = False
        if mode == "disabled":
            return
        try:
            import wandb

            self._wandb = wandb
            id_file = run_dir / RUN_ID_FILE
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
            id_file.write_text(run_id)
            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                dir=str(run_dir),
                mode=cast(Any, mode),  # offline | online (disabled returned above)
                project=project,
                group=group,
                job_type=job_type,
                name=name,
                id=run_id,
                resume="allow",
                config=config,
                tags=tags,
                reinit="finish_previous",
            )
        except Exception as err:  # noqa: BLE001 - tracking must never kill training
            self._warn(err)

    def _warn(self, err: Exception) -> None:
        if not self._warned:
            warnings.warn(f"W&B logging failed and is now off for this run: {type(err).__name__}: {err}", stacklevel=3)
            self._warned = True
        self.run = None

    def define_training_metrics(self) -> None:
        """Epoch rows against ``epoch``, step rows against ``trainer/step``; the best ``val/dice`` in the summary."""
        if self.run is None:
            return
        try:
            self.run.define_metric(EPOCH)
            self.run.define_metric(STEP)
            for prefix in ("train/*", "val/*", "weights/*", "lr", "time/*"):
                self.run.define_metric(prefix, step_metric=EPOCH)
            self.run.define_metric("val/dice", step_metric=EPOCH, summary="max")
            self.run.define_metric(STEP_PREFIX + "*", step_metric=STEP)
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log(self, row: dict, step: int | None = None) -> None:
        """One history row (None values left out); ``step`` only for runs without step metrics."""
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in row.items() if v is not None}, step=step)
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log_overlays(
        self,
        key: str,
        images: list[np.ndarray],
        truths: list[np.ndarray],
        preds: list[np.ndarray],
        class_names: list[str],
        index: bool = False,
        extra: dict | None = None,
    ) -> None:
        """Images uint8 [H,W,3] with their prediction and truth masks (:func:`overlay_masks`), padded to
        one size; ``extra`` is logged in the same row (e.g. ``{"epoch": 3}``).

        truths/preds: uint8 [H,W,C] in {0,1} (for index masks at most one channel set per pixel).
        """
        if self.run is None or not images:
            return
        try:
            images, (truths, preds) = common_size(images, [truths, preds])
            logged = [
                self._wandb.Image(image, masks=overlay_masks(truth, pred, class_names, index))
                for image, truth, pred in zip(images, truths, preds, strict=True)
            ]
            self.run.log({key: logged} | (extra or {}))
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log_image_files(self, paths: dict[str, Path]) -> None:
        """PNGs written elsewhere (plots, the reliability diagram) as W&B images, in one row."""
        if self.run is None:
            return
        try:
            self.run.log({key: self._wandb.Image(str(path)) for key, path in paths.items() if Path(path).is_file()})
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({key: self._wandb.Table(columns=list[Any](columns), data=rows)})
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log_model(self, name: str, files: dict[str, tuple[Path, list[str], dict]]) -> None:
        """Checkpoints as versions of the model artifact ``name``: file name -> (path, aliases, metadata).
        Each version's metadata also holds the file's sha256."""
        if self.run is None:
            return
        try:
            for file_name, (path, aliases, metadata) in files.items():
                artifact = self._wandb.Artifact(
                    name=name, type="model", metadata=metadata | {"file": file_name, "sha256": file_sha256(path)}
                )
                artifact.add_file(str(path), name=file_name)
                self.run.log_artifact(artifact, aliases=aliases)
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def use_model(self, reference: str, path: Path) -> None:
        """Record the checkpoint evaluated: its artifact ``reference`` (name:alias) and sha256 in the config,
        and, online, ``use_artifact`` (lineage from the model to this run; offline W&B refuses it)."""
        if self.run is None:
            return
        try:
            self.run.config.update({"checkpoint": {"artifact": reference, "sha256": file_sha256(path)}})
            if self.mode == "online":
                self.run.use_artifact(reference)
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def summary(self, values: dict) -> None:
        if self.run is None:
            return
        try:
            for key, value in values.items():
                self.run.summary[key] = value
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as err:  # noqa: BLE001
            self._warn(err)
        self.run = None
