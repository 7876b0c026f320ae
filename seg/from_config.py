"""Training from a config in one call (``seg.train_from_config``): what ``seg-train --config`` does, in Python."""

from __future__ import annotations

from pathlib import Path

from seg.config import BASE_CONFIG, Config, apply_overrides, config_to_dict, load_config, read_yaml, validate


def resolve_config(config: str | Path | Config, overrides: list[str] | None = None) -> Config:
    """A validated Config: a YAML file (relative: to the working directory) loaded over the defaults, or a
    Config; then ``overrides`` (``"key=value"``, as ``--set``). ConfigError names the file and the key."""
    if not isinstance(config, Config):
        return load_config(config, overrides)
    if not overrides:
        return config
    raw = apply_overrides(config_to_dict(config), overrides, read_yaml(BASE_CONFIG))
    return validate(raw, "config (with overrides)")


def train_from_config(config: str | Path | Config, overrides: list[str] | None = None, progress: bool = True) -> dict:
    """Train (or resume) the run of ``config`` with ``overrides`` and return its summary (summary.json's content).

    The run directory is ``run.out_dir/run.name``; relative paths in the config are resolved against the
    working directory. Calls :func:`seg.training.fit`.
    """
    from seg.training import fit

    return fit(resolve_config(config, overrides), progress=progress)
