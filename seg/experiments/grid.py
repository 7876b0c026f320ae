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
files alone (``--aggregate-only``, in :mod:`seg.experiments.report`; the statistics are in
:mod:`seg.experiments.aggregate`, the W&B sweep files for the same grid in :mod:`seg.experiments.sweeps`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from seg.config import REPO_ROOT, Config, ConfigError, expand_path, load_config, read_yaml
from seg.experiments.report import MANIFEST
from seg.files import json_text, make_folder

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
            raise ConfigError(
                f"{path}: strategy {name} sets {', '.join(outside)}: strategies may set loss.* keys "
                "only (the split, seeds and budget must be the same for every strategy)"
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
            runs.append(
                PlannedRun(
                    name,
                    strategy,
                    seed,
                    (
                        *experiment.common,
                        *experiment.profiles[profile],
                        *overrides,
                        f"logging.wandb.group={experiment.name}",
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
            configs.append(load_config(expand_path(experiment.base), list(run.overrides)))
        except ConfigError as err:
            raise ConfigError(f"{experiment.path}: strategy {run.strategy}, seed {run.seed}: {err}") from None
    return configs


def results_directory(experiment: Experiment, profile: str, results_root: Path | None = None) -> Path:
    return Path(results_root or RESULTS_ROOT) / f"{experiment.name}-{profile}"


def relative_to_repo(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def command_line(experiment: Experiment, profile: str, extra: list[str], results_root: Path | None) -> str:
    parts = ["python scripts/compare.py", f"--experiment {relative_to_repo(experiment.path)}", f"--profile {profile}"]
    parts += [f"--set {o}" for o in extra]
    if results_root is not None and Path(results_root).resolve() != RESULTS_ROOT.resolve():
        parts.append(f"--out {relative_to_repo(results_root)}")
    return " ".join(parts)


def channel_fractions(cfg: Config) -> dict[str, float]:
    """Positive-pixel fraction of each channel in the training split (the split every run uses)."""
    from seg.data.build import prepare_data

    counts = prepare_data(cfg, progress=False).train_counts
    valid = max(int(counts.valid_pixels), 1)
    return {name: int(p) / valid for name, p in zip(cfg.data.classes, counts.positive_pixels, strict=False)}


def build_manifest(
    experiment: Experiment,
    profile: str,
    runs: list[PlannedRun],
    configs: list[Config],
    extra: list[str],
    results_root: Path | None,
    results_dir: Path,
) -> dict:
    """What results.md needs besides the run summaries; ``trained_with`` keeps how each run was trained."""
    cfg = configs[0]
    command = command_line(experiment, profile, extra, results_root)
    inside = results_dir.resolve().is_relative_to(REPO_ROOT)
    return {
        "experiment": experiment.name,
        "profile": profile,
        "title": experiment.title,
        "experiment_file": relative_to_repo(experiment.path),
        "base": experiment.base,
        "command": command,
        "aggregate_command": command + " --aggregate-only",
        "results_dir": relative_to_repo(results_dir) if inside else None,
        "strategies": {name: list(o) for name, o in experiment.strategies.items()},
        "seeds": list(experiment.seeds),
        "reference": experiment.reference,
        "runs": [{"name": r.name, "strategy": r.strategy, "seed": r.seed} for r in runs],
        "classes": list(cfg.data.classes),
        "data": {"root": cfg.data.root, "mask_format": cfg.data.mask_format, "split_seed": cfg.data.split_seed},
        "budget": {
            "epochs": cfg.train.epochs,
            "image_size": cfg.data.image_size,
            "samples_per_epoch": cfg.data.samples_per_epoch,
            "batch_size": cfg.train.batch_size,
            "max_steps_per_epoch": cfg.train.max_steps_per_epoch,
            "max_val_images": cfg.data.max_val_images,
            "arch": cfg.model.arch,
            "encoder": cfg.model.encoder,
            "encoder_weights": cfg.model.encoder_weights,
            "lr": cfg.train.lr,
            "normalize": cfg.loss.normalize,
        },
        "train_positive_fraction": channel_fractions(cfg),
        "wandb": {
            "mode": cfg.logging.wandb.mode,
            "project": cfg.logging.wandb.project,
            "group": cfg.logging.wandb.group,
            "out_dir": cfg.run.out_dir,
        },
        "trained_with": previous_trained_with(results_dir, [r.name for r in runs]),
    }


def previous_trained_with(results_dir: Path, names: list[str]) -> dict[str, dict]:
    """``{run: {"jobs": N, "machine": text}}`` from an earlier manifest, for the runs still in the grid."""
    path = results_dir / MANIFEST
    previous = json.loads(path.read_text()) if path.is_file() else {}
    recorded = previous.get("trained_with") or {}
    if not recorded and "jobs" in previous:  # a manifest from before per-run records
        recorded = {
            name: {"jobs": previous["jobs"], "machine": previous.get("machine")}
            for name in names
            if (results_dir / "runs" / f"{name}.json").is_file()
        }
    return {name: recorded[name] for name in names if name in recorded}


def machine_description(device: str) -> str:
    """Where the wall times were measured, in words (e.g. "2 CPU cores, no GPU")."""
    import torch

    cores = f"{os.cpu_count()} CPU cores"
    if device != "cpu" and torch.cuda.is_available():
        return f"{cores}, {torch.cuda.get_device_name(0)}"
    return f"{cores}, no GPU" if not torch.cuda.is_available() else f"{cores} (train.device cpu)"


# ------------------------------------------------------------------ running


_RESULTS_LOCK = threading.Lock()  # --jobs: runs finish in threads that share the manifest


def record_run(cfg: Config, results_dir: Path, manifest: dict, trained_with: dict) -> None:
    """Copy a finished run's summary.json to ``results_dir/runs/<run>.json``; a new or changed
    summary was trained by this call, so ``trained_with`` (jobs, machine) is noted in the manifest."""
    from seg.files import write_text_atomic
    from seg.training import run_directory

    with _RESULTS_LOCK:
        target = results_dir / "runs" / f"{cfg.run.name}.json"
        text = (run_directory(cfg) / "summary.json").read_text()
        if target.is_file() and target.read_text() == text:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, text)
        manifest["trained_with"][cfg.run.name] = trained_with
        write_manifest(manifest, results_dir)


def already_recorded(cfg: Config, results_dir: Path) -> bool:
    """A run whose summary was copied into the results after its last epoch is finished, even
    when runs/ is gone (a fresh checkout: runs/ is not committed, the results are)."""
    from seg.training import run_directory

    copy = results_dir / "runs" / f"{cfg.run.name}.json"
    if not copy.is_file() or (run_directory(cfg) / "summary.json").is_file():
        return False
    return json.loads(copy.read_text()).get("epochs_completed", 0) >= cfg.train.epochs


def train_in_process(configs: list[Config], results_dir: Path, manifest: dict, progress: bool) -> None:
    """Run the grid one after the other in this process (finished runs return at once)."""
    from seg import training

    trained_with = {"jobs": 1, "machine": machine_description(configs[0].train.device)}
    for index, cfg in enumerate(configs, 1):
        print(f"[{index}/{len(configs)}] {cfg.run.name}", flush=True)
        if already_recorded(cfg, results_dir):
            print(f"{cfg.run.name}: finished (recorded in {results_dir / 'runs'}), skipped", flush=True)
            continue
        training.fit(cfg, progress=progress)
        record_run(cfg, results_dir, manifest, trained_with)


def train_in_subprocesses(
    experiment: Experiment, runs: list[PlannedRun], configs: list[Config], results_dir: Path, manifest: dict, jobs: int
) -> None:
    """Run the grid ``jobs`` at a time, each as ``scripts/train.py`` with its log in the run directory."""
    from seg.training import run_directory

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    trained_with = {"jobs": jobs, "machine": machine_description(configs[0].train.device)}

    def one(item: tuple[PlannedRun, Config]) -> tuple[str, int, Path]:
        run, cfg = item
        log = run_directory(cfg) / "compare.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(TRAIN_SCRIPT), "--config", str(expand_path(experiment.base)), "--no-progress"]
        command += [arg for o in run.overrides for arg in ("--set", o)]
        with log.open("w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT).returncode
        if code == 0:
            record_run(cfg, results_dir, manifest, trained_with)
        print(f"{run.name}: {'done' if code == 0 else f'failed (exit {code}), see {log}'}", flush=True)
        return run.name, code, log

    todo = [(run, cfg) for run, cfg in zip(runs, configs, strict=False) if not already_recorded(cfg, results_dir)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        failed = [(name, log) for name, code, log in pool.map(one, todo) if code != 0]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(runs)} runs failed: " + "; ".join(f"{name} (log: {log})" for name, log in failed)
        )


def write_manifest(manifest: dict, results_dir: Path) -> None:
    make_folder(results_dir, "--out")
    (results_dir / MANIFEST).write_text(json_text(manifest) + "\n")


def run_experiment(
    experiment: Experiment,
    profile: str = "quick",
    extra: list[str] | None = None,
    jobs: int = 1,
    results_root: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train every run of the grid that is not finished, copy the summaries, write the manifest."""
    extra = list(extra or [])
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    runs = plan_runs(experiment, profile, extra)
    configs = resolve_configs(experiment, runs)
    results_dir = results_directory(experiment, profile, results_root)
    manifest = build_manifest(experiment, profile, runs, configs, extra, results_root, results_dir)
    write_manifest(manifest, results_dir)
    print(f"{experiment.name} ({profile}): {len(runs)} runs, results in {results_dir}", flush=True)
    if jobs == 1:
        train_in_process(configs, results_dir, manifest, progress)
    else:
        train_in_subprocesses(experiment, runs, configs, results_dir, manifest, jobs)
    return results_dir
