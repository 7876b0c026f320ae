"""W&B sweep files for an experiment's grid: ``experiments/<experiment>[.<group>].sweep.yaml``.

Each is a grid over ``loss.weighting`` x ``run.seed`` with the experiment's ``set``, the
profile's budget (``full`` by default) and the group's coupled loss keys as fixed values.
The agent runs ``scripts/train.py --config <base> ${args_no_hyphens}``, i.e. bare
``key=value`` overrides. Written by ``scripts/compare.py --write-sweeps``; a test checks the
committed files equal what this module writes and that every key is a config key.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from seg.config import ConfigError
from seg.experiments.experiment import Experiment, override_key, relative_to_repo


def sweep_files(experiment: Experiment, profile: str = "full") -> dict[str, dict]:
    """W&B grid sweeps over loss.weighting x run.seed, one per set of coupled loss keys.

    A grid sweep cannot couple keys (border_map needs apply_as: weight), so strategies
    are grouped by their overrides other than loss.weighting; the group without such
    overrides keeps the plain name ``<experiment>.sweep.yaml``. W&B passes values as
    ``key=str(value)``: null is written as the string "null". Each sweep run writes
    to its own run.out_dir (runs/sweeps/<W&B run id>), in the W&B group ``<experiment>-<profile>``,
    named from its swept values (``logging.wandb.name``, e.g. ``per_channel-s1``).
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, overrides in experiment.strategies.items():
        weighting = [o.partition("=")[2] for o in overrides if override_key(o) == "loss.weighting"]
        if len(weighting) != 1:
            raise ConfigError(f"{experiment.path}: strategy {name} must set loss.weighting once for a sweep")
        fixed = tuple(sorted(o for o in overrides if override_key(o) != "loss.weighting"))
        groups.setdefault(fixed, []).append(weighting[0])
    files = {}
    for fixed, weightings in groups.items():
        label = ".".join(re.sub(r"[^A-Za-z0-9_]+", "_", o.removeprefix("loss.")).strip("_") for o in fixed)
        parameters = {"loss.weighting": {"values": weightings}, "run.seed": {"values": list(experiment.seeds)}}
        for text in (
            *experiment.common,
            *experiment.profiles[profile],
            *fixed,
            f"logging.wandb.group={experiment.name}-{profile}",
            "logging.wandb.mode=online",
            "run.out_dir=runs/sweeps/${WANDB_RUN_ID}",
        ):
            key, _, value = text.partition("=")
            parsed = yaml.safe_load(value) if value.strip() else None
            parameters[key] = {"value": "null" if parsed is None else parsed}
        # each run's W&B name from the swept values (a template of config keys, filled in by train.py)
        parameters["logging.wandb.name"] = {"value": f"{label + '-' if label else ''}{{loss.weighting}}-s{{run.seed}}"}
        files[f"{experiment.name}{'.' + label if label else ''}.sweep.yaml"] = {
            "name": f"{experiment.name}-{profile}{'-' + label if label else ''}",
            "program": "scripts/train.py",
            "method": "grid",
            "metric": {"name": "val/dice", "goal": "maximize"},
            "parameters": parameters,
            "command": [
                "${env}",
                "${interpreter}",
                "scripts/train.py",
                "--config",
                experiment.base,
                "${args_no_hyphens}",
            ],
        }
    return files


def sweep_text(experiment: Experiment, sweep: dict, profile: str = "full") -> str:
    header = (
        f"# W&B sweep for {relative_to_repo(experiment.path)} (profile {profile}), written by\n"
        f"#   python scripts/compare.py --experiment {relative_to_repo(experiment.path)} --write-sweeps\n"
        "# Start it with `wandb sweep <this file>` and `wandb agent <sweep id>`; a test checks that\n"
        "# every swept key is a config key and that this file matches the experiment.\n"
    )
    return header + yaml.safe_dump(sweep, sort_keys=False, width=120)


def write_sweeps(experiment: Experiment, profile: str = "full") -> list[Path]:
    written = []
    for filename, sweep in sweep_files(experiment, profile).items():
        path = experiment.path.parent / filename
        path.write_text(sweep_text(experiment, sweep, profile))
        written.append(path)
    return written
