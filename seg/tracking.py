"""Experiment tracking: metrics.jsonl, and W&B (the only module that imports wandb).

W&B is offline by default: runs are written under ``<run_dir>/wandb/`` and can be
uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``. A W&B failure
is reported once as a warning and never stops training.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np

from seg.files import json_text

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
    ) -> None:
        self.run = None
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

    def log(self, row: dict, step: int) -> None:
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
        step: int,
    ) -> None:
        """Images uint8 [H,W,3] with one mask overlay key per channel, for prediction and truth.

        truths/preds: uint8 [H,W,C] in {0,1}; multi-label channels may overlap, so each
        channel gets its own overlay (``pred/<name>``, ``truth/<name>``).
        """
        if self.run is None:
            return
        try:
            wandb = self._wandb
            logged = []
            for image, truth, pred in zip(images, truths, preds, strict=False):
                masks = {}
                for c, name in enumerate(class_names):
                    labels = {0: "background", 1: name}
                    masks[f"pred/{name}"] = {"mask_data": pred[..., c].astype(np.uint8), "class_labels": labels}
                    masks[f"truth/{name}"] = {"mask_data": truth[..., c].astype(np.uint8), "class_labels": labels}
                logged.append(wandb.Image(image, masks=masks))
            self.run.log({key: logged}, step=step)
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log_image_file(self, key: str, path: Path, step: int | None = None) -> None:
        """A PNG written elsewhere (e.g. the reliability diagram), as a W&B image."""
        if self.run is None:
            return
        try:
            self.run.log({key: self._wandb.Image(str(path))}, step=step)
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({key: self._wandb.Table(columns=list[Any](columns), data=rows)})
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log_file_artifact(self, path: Path, name: str, kind: str) -> None:
        if self.run is None:
            return
        try:
            artifact = self._wandb.Artifact(name=name, type=kind)
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)
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
