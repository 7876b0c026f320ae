"""Compare weighting strategies: an experiment file -> a grid of runs -> aggregated results.

An experiment (``experiments/NAME.yaml``) is data, not code::

    title: Weighting strategies on ISBI 2012     # (optional) results.md heading
    base: configs/isbi2012.yaml                  # the config every run starts from
    set: {loss.normalize: true}                  # overrides for every run (dotted or nested keys)
    strategies:                                  # name -> loss.* overrides
      none: {loss.weighting: none}
      border_map: {loss.weighting: border_map, loss.apply_as: weight}
    seeds: [0, 1, 2]                             # run.seed of each run
    reference: none                              # (optional, default none) paired differences against it
    profiles: {quick: {train.epochs: 20}, full: {...}}   # budgets

Every strategy x seed is one training run, ``<experiment>-<profile>-<strategy>-s<seed>``
under run.out_dir, all in the W&B group ``<experiment>``. Strategies may set ``loss.*``
keys only, so the split (data.split_seed), the augmentation seeds (run.seed) and the
budget are the same for every strategy. Interrupted grids resume: fit() skips finished
runs and resumes interrupted ones from last.pt. Each finished run's summary.json is
copied to ``experiments/results/<experiment>-<profile>/runs/<run>.json`` beside an
``experiment.json`` manifest, so that the aggregation can be regenerated from committed
files alone (``--aggregate-only``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from seg.compare_report import MANIFEST
from seg.config import REPO_ROOT, Config, ConfigError, expand_path, load_config, read_yaml

RESULTS_ROOT = REPO_ROOT / "experiments" / "results"
TRAIN_SCRIPT = REPO_ROOT / "scripts" / "train.py"
EXPERIMENT_KEYS = {"title", "base", "set", "strategies", "seeds", "profiles", "reference"}
OWNED_KEYS = ("run.name", "run.seed")  # set by the grid, per run
_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    base: str  # as written (repo-relative), for commands and sweep files
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
    raw = read_yaml(path)
    unknown = sorted(set(raw) - EXPERIMENT_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (expected {', '.join(sorted(EXPERIMENT_KEYS))})")
    base, common = raw.get("base"), raw.get("set") or {}
    if isinstance(base, dict):  # base: {config: ..., set: {...}}
        base, common = base.get("config"), {**(base.get("set") or {}), **common}
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
        outside = [override_key(o) for o in parsed[str(name)] if not override_key(o).startswith("loss.")]
        if outside:
            raise ConfigError(f"{path}: strategy {name} sets {', '.join(outside)}: strategies may set loss.* keys "
                              "only (the split, seeds and budget must be the same for every strategy)")
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: key 'seeds' must be a list of distinct integers, e.g. [0, 1, 2]")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError(f"{path}: key 'profiles' must map profile names (quick, full) to overrides")
    reference = raw.get("reference", "none" if "none" in parsed else None)
    if reference is not None and reference not in parsed:
        raise ConfigError(f"{path}: reference {reference!r} is not one of the strategies ({', '.join(parsed)})")
    experiment = Experiment(
        name=path.stem, path=path, base=base, common=flatten_overrides(common, f"{path}: set"),
        strategies=parsed, seeds=tuple(seeds),
        profiles={str(k): flatten_overrides(v, f"{path}: profile {k}") for k, v in profiles.items()},
        reference=reference, title=raw.get("title"))
    for where, overrides in [("set", experiment.common), *experiment.profiles.items()]:
        owned = [override_key(o) for o in overrides if override_key(o) in OWNED_KEYS]
        if owned:
            raise ConfigError(f"{path}: {where} sets {', '.join(owned)}: the grid sets run.name and run.seed")
    return experiment


# ------------------------------------------------------------------ the grid


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
            runs.append(PlannedRun(name, strategy, seed, (
                *experiment.common, *experiment.profiles[profile], *overrides,
                f"logging.wandb.group={experiment.name}", *extra, f"run.name={name}", f"run.seed={seed}")))
    return runs


def resolve_configs(experiment: Experiment, runs: list[PlannedRun]) -> list[Config]:
    """Validate every run's config before any work starts (a bad key names strategy and seed)."""
    configs = []
    for run in runs:
        try:
            configs.append(load_config(expand_path(experiment.base), list(run.overrides)))
        except ConfigError as err:
            raise ConfigError(f"{experiment.path}: strategy {run.strategy}, seed {run.seed}: {err}") from None
    return configs


def results_directory(experiment: Experiment, profile: str, results_root: Path | None = None) -> Path:
    return Path(results_root or RESULTS_ROOT) / f"{experiment.name}-{profile}"


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def command_line(experiment: Experiment, profile: str, extra: list[str], results_root: Path | None) -> str:
    parts = ["python scripts/compare.py", f"--experiment {_relative(experiment.path)}", f"--profile {profile}"]
    parts += [f"--set {o}" for o in extra]
    if results_root is not None and Path(results_root).resolve() != RESULTS_ROOT.resolve():
        parts.append(f"--out {_relative(results_root)}")
    return " ".join(parts)


def channel_fractions(cfg: Config) -> dict[str, float]:
    """Positive-pixel fraction of each channel in the training split (the split every run uses)."""
    from seg.data.build import prepare_data

    counts = prepare_data(cfg, progress=False).train_counts
    valid = max(int(counts.valid_pixels), 1)
    return {name: int(p) / valid for name, p in zip(cfg.data.classes, counts.positive_pixels)}


def build_manifest(experiment: Experiment, profile: str, runs: list[PlannedRun], configs: list[Config],
                   extra: list[str], results_root: Path | None, results_dir: Path, jobs: int) -> dict:
    cfg = configs[0]
    command = command_line(experiment, profile, extra, results_root)
    inside = results_dir.resolve().is_relative_to(REPO_ROOT)
    return {
        "experiment": experiment.name, "profile": profile, "title": experiment.title,
        "experiment_file": _relative(experiment.path), "base": experiment.base,
        "command": command, "aggregate_command": command + " --aggregate-only",
        "results_dir": _relative(results_dir) if inside else None,
        "strategies": {name: list(o) for name, o in experiment.strategies.items()},
        "seeds": list(experiment.seeds), "reference": experiment.reference,
        "runs": [{"name": r.name, "strategy": r.strategy, "seed": r.seed} for r in runs],
        "classes": list(cfg.data.classes),
        "data": {"root": cfg.data.root, "mask_format": cfg.data.mask_format, "split_seed": cfg.data.split_seed},
        "budget": {"epochs": cfg.train.epochs, "image_size": cfg.data.image_size,
                   "samples_per_epoch": cfg.data.samples_per_epoch, "batch_size": cfg.train.batch_size,
                   "max_steps_per_epoch": cfg.train.max_steps_per_epoch, "max_val_images": cfg.data.max_val_images,
                   "arch": cfg.model.arch, "encoder": cfg.model.encoder, "encoder_weights": cfg.model.encoder_weights,
                   "lr": cfg.train.lr, "normalize": cfg.loss.normalize},
        "train_positive_fraction": channel_fractions(cfg),
        "wandb": {"mode": cfg.logging.wandb.mode, "project": cfg.logging.wandb.project,
                  "group": cfg.logging.wandb.group, "out_dir": cfg.run.out_dir},
        "jobs": jobs, "machine": machine_description(cfg.train.device),
    }


def machine_description(device: str) -> str:
    """Where the wall times were measured, in words (e.g. "2 CPU cores, no GPU")."""
    import torch

    cores = f"{os.cpu_count()} CPU cores"
    if device != "cpu" and torch.cuda.is_available():
        return f"{cores}, {torch.cuda.get_device_name(0)}"
    return f"{cores}, no GPU" if not torch.cuda.is_available() else f"{cores} (train.device cpu)"


# ------------------------------------------------------------------ running


def copy_summary(cfg: Config, results_dir: Path) -> None:
    """Copy a finished run's summary.json into ``results_dir/runs/<run>.json``."""
    from seg.checkpoint import write_text_atomic
    from seg.fit import run_directory

    target = results_dir / "runs" / f"{cfg.run.name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, (run_directory(cfg) / "summary.json").read_text())


def train_in_process(configs: list[Config], results_dir: Path, progress: bool) -> None:
    """Run the grid one after the other in this process (finished runs return at once)."""
    from seg import fit as training

    for index, cfg in enumerate(configs, 1):
        print(f"[{index}/{len(configs)}] {cfg.run.name}", flush=True)
        training.fit(cfg, progress=progress)
        copy_summary(cfg, results_dir)


def train_in_subprocesses(experiment: Experiment, runs: list[PlannedRun], configs: list[Config],
                          results_dir: Path, jobs: int) -> None:
    """Run the grid ``jobs`` at a time, each as ``scripts/train.py`` with its log in the run directory."""
    from seg.fit import run_directory

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))

    def one(item: tuple[PlannedRun, Config]) -> tuple[str, int, Path]:
        run, cfg = item
        log = run_directory(cfg) / "compare.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(TRAIN_SCRIPT), "--config", str(expand_path(experiment.base)), "--no-progress"]
        command += [arg for o in run.overrides for arg in ("--set", o)]
        with log.open("w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT).returncode
        if code == 0:
            copy_summary(cfg, results_dir)
        print(f"{run.name}: {'done' if code == 0 else f'failed (exit {code}), see {log}'}", flush=True)
        return run.name, code, log

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        failed = [(name, log) for name, code, log in pool.map(one, zip(runs, configs)) if code != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} runs failed: "
                           + "; ".join(f"{name} (log: {log})" for name, log in failed))


def write_manifest(manifest: dict, results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def run_experiment(experiment: Experiment, profile: str = "quick", extra: list[str] | None = None, jobs: int = 1,
                   results_root: Path | None = None, progress: bool = True) -> Path:
    """Train every run of the grid that is not finished, copy the summaries, write the manifest."""
    extra = list(extra or [])
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    runs = plan_runs(experiment, profile, extra)
    configs = resolve_configs(experiment, runs)
    results_dir = results_directory(experiment, profile, results_root)
    write_manifest(build_manifest(experiment, profile, runs, configs, extra, results_root, results_dir, jobs),
                   results_dir)
    print(f"{experiment.name} ({profile}): {len(runs)} runs, results in {results_dir}", flush=True)
    if jobs == 1:
        train_in_process(configs, results_dir, progress)
    else:
        train_in_subprocesses(experiment, runs, configs, results_dir, jobs)
    return results_dir


# ------------------------------------------------------------------ W&B sweeps for the same grid


def sweep_files(experiment: Experiment, profile: str = "full") -> dict[str, dict]:
    """W&B grid sweeps over loss.weighting x run.seed, one per set of coupled loss keys.

    A grid sweep cannot couple keys (border_map needs apply_as: weight), so strategies
    are grouped by their overrides other than loss.weighting; the group holding the
    reference keeps the plain name ``<experiment>.sweep.yaml``. W&B passes values as
    ``key=str(value)``: null is written as the string "null". Each sweep run writes
    to its own run.out_dir (runs/sweeps/<W&B run id>).
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, overrides in experiment.strategies.items():
        weighting = [o.partition("=")[2] for o in overrides if override_key(o) == "loss.weighting"]
        if len(weighting) != 1:
            raise ConfigError(f"{experiment.path}: strategy {name} must set loss.weighting once for a sweep")
        fixed = tuple(sorted(o for o in overrides if override_key(o) != "loss.weighting"))
        groups.setdefault(fixed, []).append(weighting[0])
    files = {}
    for fixed, weightings in sorted(groups.items(), key=lambda g: (experiment.reference or "none") not in g[1]):
        label = ".".join(re.sub(r"[^A-Za-z0-9_]+", "_", o.removeprefix("loss.")) for o in fixed)
        parameters = {"loss.weighting": {"values": weightings}, "run.seed": {"values": list(experiment.seeds)}}
        for text in (*experiment.common, *experiment.profiles[profile], *fixed,
                     f"logging.wandb.group={experiment.name}", "logging.wandb.mode=online",
                     "run.out_dir=runs/sweeps/${WANDB_RUN_ID}"):
            key, _, value = text.partition("=")
            parsed = yaml.safe_load(value) if value.strip() else None
            parameters[key] = {"value": "null" if parsed is None else parsed}
        files[f"{experiment.name}{'.' + label if label else ''}.sweep.yaml"] = {
            "name": f"{experiment.name}-{profile}{'-' + label if label else ''}",
            "program": "scripts/train.py", "method": "grid",
            "metric": {"name": "val/dice", "goal": "maximize"},
            "parameters": parameters,
            "command": ["${env}", "${interpreter}", "scripts/train.py", "--config", experiment.base,
                        "${args_no_hyphens}"],
        }
    return files


def sweep_text(experiment: Experiment, sweep: dict, profile: str = "full") -> str:
    header = (f"# W&B sweep for {_relative(experiment.path)} (profile {profile}), written by\n"
              f"#   python scripts/compare.py --experiment {_relative(experiment.path)} --write-sweeps\n"
              "# Start it with `wandb sweep <this file>` and `wandb agent <sweep id>`; a test checks that\n"
              "# every swept key is a config key and that this file matches the experiment.\n")
    return header + yaml.safe_dump(sweep, sort_keys=False, width=120)


def write_sweeps(experiment: Experiment, profile: str = "full") -> list[Path]:
    written = []
    for filename, sweep in sweep_files(experiment, profile).items():
        path = experiment.path.parent / filename
        path.write_text(sweep_text(experiment, sweep, profile))
        written.append(path)
    return written
