"""Experiment files (``experiments/NAME.yaml``): loading and checking them, and planning their grid of runs.

An experiment is data, not code::

    title: Weighting strategies on ISBI 2012     # (optional) results.md heading
    base: configs/isbi2012.yaml                  # the config every run starts from
    set: {loss.normalize: true}                  # overrides for every run (dotted or nested keys)
    strategies:                                  # name (an arm) -> loss.* and data.sampling overrides
      none: {loss.weighting: none}
      border_map: {loss.weighting: border_map, loss.apply_as: weight}
      dice_bce: {loss.terms: [{name: dice}, {name: bce}]}
      bce_oversampled: {data.sampling: foreground, data.foreground_fraction: 0.33}
    seeds: [0, 1, 2]                             # run.seed of each run
    reference: none                              # (optional, default none) paired differences against it
    profiles: {quick: {train.epochs: 20}, full: {...}}   # budgets

Every strategy x seed is one training run, ``<experiment>-<profile>-<strategy>-s<seed>``
under run.out_dir, all in the W&B group ``<experiment>``. Strategies may set ``loss.*``
keys and the foreground sampling (``data.sampling``, ``data.foreground_fraction``,
``data.foreground_channel``) only, so the split (data.split_seed), the augmentation seeds (run.seed) and the
budget are the same for every strategy. Running the grid is :mod:`seg.experiments.grid`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from seg.config import Config, ConfigError, expand_path, load_config, read_yaml
from seg.weighting.registry import check_config

RESULTS_ROOT = Path("experiments") / "results"  # relative to the working directory (compare.py --out overrides)
ARM_KEYS = ("loss.", "data.sampling", "data.foreground_fraction", "data.foreground_channel")  # what an arm may set
EXPERIMENT_KEYS = {"title", "base", "set", "strategies", "seeds", "profiles", "reference"}
OWNED_KEYS = ("run.name", "run.seed")  # set by the grid, per run
_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    base: str  # as written (relative: to the working directory), for commands and sweep files
    common: tuple[str, ...]  # "key=value" overrides for every run
    strategies: dict[str, tuple[str, ...]]
    seeds: tuple[int, ...]
    profiles: dict[str, tuple[str, ...]]
    reference: str | None
    title: str | None


@dataclass(frozen=True)
class PlannedRun:
    name: str
    strategy: str
    seed: int
    overrides: tuple[str, ...]


# ------------------------------------------------------------------ experiment file


def _value_text(value) -> str:
    """A YAML value as override text that parses back to the same value."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def flatten_overrides(mapping: dict, where: str, prefix: str = "") -> tuple[str, ...]:
    """``{loss: {weighting: none}}`` or ``{loss.weighting: none}`` -> ``("loss.weighting=none",)``."""
    if mapping is None:
        return ()
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys to values, got {type(mapping).__name__}")
    out: list[str] = []
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten_overrides(value, where, dotted + ".")
        else:
            out.append(f"{dotted}={_value_text(value)}")
    return tuple(out)


def override_key(text: str) -> str:
    return text.partition("=")[0].strip()


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file (the run configs are validated by :func:`resolve_configs`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found (experiments/*.yaml lists the experiments)")
    raw = read_yaml(path)
    unknown = sorted(set(raw) - EXPERIMENT_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} (expected {', '.join(sorted(EXPERIMENT_KEYS))})"
        )
    base, common = raw.get("base"), raw.get("set") or {}
    if isinstance(base, dict):  # base: {config: ..., set: {...}}
        nested: dict = base
        base, common = nested.get("config"), {**(nested.get("set") or {}), **common}
    if not isinstance(base, str) or not expand_path(base).is_file():
        raise ConfigError(f"{path}: key 'base' must name a config file, e.g. configs/isbi2012.yaml (got {base!r})")
    strategies = raw.get("strategies")
    if not isinstance(strategies, dict) or not strategies:
        raise ConfigError(f"{path}: key 'strategies' must map strategy names to loss.* overrides")
    parsed = {}
    for name, overrides in strategies.items():
        if not _NAME.fullmatch(str(name)):
            raise ConfigError(f"{path}: strategy name {name!r}: use letters, digits and _ (it names runs and files)")
        parsed[str(name)] = flatten_overrides(overrides, f"{path}: strategy {name}")
        outside = [override_key(o) for o in parsed[str(name)] if not override_key(o).startswith(ARM_KEYS)]
        if outside:
            raise ConfigError(
                f"{path}: strategy {name} sets {', '.join(outside)}: strategies may set loss.* keys and "
                "data.sampling, data.foreground_fraction, data.foreground_channel only (the split, seeds and "
                "budget must be the same for every strategy)"
            )
    seeds = raw.get("seeds")
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ConfigError(f"{path}: key 'seeds' must be a list of distinct integers, e.g. [0, 1, 2]")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError(f"{path}: key 'profiles' must map profile names (quick, full) to overrides")
    reference = raw.get("reference", "none" if "none" in parsed else None)
    if reference is not None and reference not in parsed:
        raise ConfigError(f"{path}: reference {reference!r} is not one of the strategies ({', '.join(parsed)})")
    experiment = Experiment(
        name=path.stem,
        path=path,
        base=base,
        common=flatten_overrides(common, f"{path}: set"),
        strategies=parsed,
        seeds=tuple(seeds),
        profiles={str(k): flatten_overrides(v, f"{path}: profile {k}") for k, v in profiles.items()},
        reference=reference,
        title=raw.get("title"),
    )
    for where, overrides in [("set", experiment.common), *experiment.profiles.items()]:
        owned = [override_key(o) for o in overrides if override_key(o) in OWNED_KEYS]
        if owned:
            raise ConfigError(f"{path}: {where} sets {', '.join(owned)}: the grid sets run.name and run.seed")
    return experiment


# ------------------------------------------------------------------ the plan


def plan_runs(experiment: Experiment, profile: str, extra: list[str] | tuple[str, ...] = ()) -> list[PlannedRun]:
    """Every strategy x seed, with its overrides: set, profile, strategy, group, --set, then name and seed."""
    if profile not in experiment.profiles:
        raise ConfigError(f"{experiment.path}: no profile {profile!r} (profiles: {', '.join(experiment.profiles)})")
    owned = [override_key(o) for o in extra if override_key(o).lstrip("-") in OWNED_KEYS]
    if owned:
        raise ConfigError(f"--set {', '.join(owned)}: the grid sets run.name and run.seed for each run")
    runs = []
    for strategy, overrides in experiment.strategies.items():
        for seed in experiment.seeds:
            name = f"{experiment.name}-{profile}-{strategy}-s{seed}"
            runs.append(
                PlannedRun(
                    name,
                    strategy,
                    seed,
                    (
                        *experiment.common,
                        *experiment.profiles[profile],
                        *overrides,
                        f"logging.wandb.group={experiment.name}-{profile}",
                        *extra,
                        f"run.name={name}",
                        f"run.seed={seed}",
                    ),
                )
            )
    return runs


def resolve_configs(experiment: Experiment, runs: list[PlannedRun]) -> list[Config]:
    """Validate every run's config before any work starts (a bad key names strategy and seed)."""
    configs = []
    for run in runs:
        try:
            cfg = load_config(expand_path(experiment.base), list(run.overrides))
            check_config(cfg)
            configs.append(cfg)
        except ConfigError as err:
            raise ConfigError(f"{experiment.path}: strategy {run.strategy}, seed {run.seed}: {err}") from None
    return configs


def results_directory(experiment: Experiment, profile: str, results_root: Path | None = None) -> Path:
    return Path(results_root or RESULTS_ROOT) / f"{experiment.name}-{profile}"


def relative_to_repo(path: Path) -> str:
    """``path`` relative to the working directory (the repository root, run from it) when inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def command_line(experiment: Experiment, profile: str, extra: list[str], results_root: Path | None) -> str:
    parts = ["python scripts/compare.py", f"--experiment {relative_to_repo(experiment.path)}", f"--profile {profile}"]
    parts += [f"--set {o}" for o in extra]
    if results_root is not None and Path(results_root).resolve() != RESULTS_ROOT.resolve():
        parts.append(f"--out {relative_to_repo(results_root)}")
    return " ".join(parts)
