"""Running an experiment's grid: train every run that is not finished, copy its summary, keep the manifest.

Interrupted grids resume: fit() skips finished runs and resumes interrupted ones from last.pt.
Each finished run's summary.json is copied to ``experiments/results/<experiment>-<profile>/runs/<run>.json``
(under the working directory, or ``--out``) beside an ``experiment.json`` manifest, so that the aggregation
can be regenerated from committed files alone (``--aggregate-only``, :mod:`seg.experiments.report`). The
experiment file and the plan of runs are :mod:`seg.experiments.experiment`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from seg.config import Config, ConfigError, expand_path, mask_spec
from seg.experiments.experiment import (
    Experiment,
    PlannedRun,
    command_line,
    plan_runs,
    relative_to_repo,
    resolve_configs,
    results_directory,
)
from seg.experiments.manifest import (
    MANIFEST,
    Budget,
    DataInfo,
    Manifest,
    PlannedRunInfo,
    TestInfo,
    TrainedWith,
    WandbInfo,
)
from seg.results import EvalResult, RunSummary

EVALUATED_CHECKPOINT = "last"  # the fixed budget's final model: no epoch is chosen on validation

TRAIN_MODULE = "seg.apps.train"  # --jobs N runs each as python -m TRAIN_MODULE, from the working directory
EVALUATE_MODULE = "seg.apps.evaluate"  # ... and scores it on test with python -m EVALUATE_MODULE


# ------------------------------------------------------------------ the manifest


def channel_fractions(cfg: Config) -> dict[str, float]:
    """Positive-pixel fraction of each channel in the training split (the split every run uses)."""
    from seg.run_data import prepare_data

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
) -> Manifest:
    """What results.md needs besides the run summaries; ``trained_with`` keeps how each run was trained."""
    cfg = configs[0]
    command = command_line(experiment, profile, extra, results_root)
    inside = results_dir.resolve().is_relative_to(Path.cwd().resolve())
    return Manifest(
        experiment=experiment.name,
        profile=profile,
        title=experiment.title,
        experiment_file=relative_to_repo(experiment.path),
        base=experiment.base,
        command=command,
        aggregate_command=command + " --aggregate-only",
        results_dir=relative_to_repo(results_dir) if inside else None,
        strategies={name: list(o) for name, o in experiment.strategies.items()},
        seeds=list(experiment.seeds),
        reference=experiment.reference,
        runs=[PlannedRunInfo(name=r.name, strategy=r.strategy, seed=r.seed) for r in runs],
        classes=list(cfg.data.classes),
        data=DataInfo(root=cfg.data.root, mask_format=mask_spec(cfg).fmt, split_seed=cfg.data.split_seed),
        budget=Budget(
            epochs=cfg.train.epochs,
            image_size=cfg.data.image_size,
            samples_per_epoch=cfg.data.samples_per_epoch,
            batch_size=cfg.train.batch_size,
            max_steps_per_epoch=cfg.train.max_steps_per_epoch,
            max_val_images=cfg.data.max_val_images,
            arch=cfg.model.arch,
            encoder=cfg.model.encoder,
            encoder_weights=cfg.model.encoder_weights,
            lr=cfg.train.lr,
            normalize=cfg.loss.normalize,
        ),
        train_positive_fraction=channel_fractions(cfg),
        wandb=WandbInfo(
            mode=cfg.logging.wandb.mode,
            project=cfg.logging.wandb.project,
            group=cfg.logging.wandb.group,
            out_dir=cfg.run.out_dir,
        ),
        trained_with=previous_trained_with(results_dir, [r.name for r in runs]),
        test=test_info(cfg),
    )


def test_info(cfg: Config) -> TestInfo | None:
    """The data's labelled test split (the same for every run of the grid), or None."""
    from seg.run_data import data_splits, needs_instance_files

    splits = data_splits(cfg, needs_instance_files(cfg))
    if not splits.test:
        return None
    metrics = cfg.metrics
    objects = {
        "negative": "the regions the positive class separates (connected components of the negative class)",
        "positive": "connected components of the positive class",
        "instance": "the instance labels",
    }[metrics.objects_from]
    return TestInfo(
        split="test",
        source=splits.test_source,
        num_images=len(splits.test),
        checkpoint=EVALUATED_CHECKPOINT,
        objects=f"{objects}, {metrics.connectivity}-connected" if metrics.structure else None,
    )


def previous_trained_with(results_dir: Path, names: list[str]) -> dict[str, TrainedWith]:
    """``{run: TrainedWith}`` from an earlier manifest, for the runs still in the grid."""
    path = results_dir / MANIFEST
    if not path.is_file():
        return {}
    previous = Manifest.read(path)
    recorded = previous.trained_with or {}
    if not recorded and previous.jobs is not None:  # a manifest from before per-run records
        old = TrainedWith(jobs=previous.jobs, machine=previous.machine)
        recorded = {name: old for name in names if (results_dir / "runs" / f"{name}.json").is_file()}
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


def record_run(cfg: Config, results_dir: Path, manifest: Manifest, trained_with: TrainedWith) -> None:
    """Copy a finished run's summary.json to ``results_dir/runs/<run>.json``; a new or changed
    summary was trained by this call, so ``trained_with`` (jobs, machine) is noted in the manifest."""
    from seg.files import write_text_atomic
    from seg.run_files import run_directory

    with _RESULTS_LOCK:
        target = results_dir / "runs" / f"{cfg.run.name}.json"
        text = (run_directory(cfg) / "summary.json").read_text()
        if target.is_file() and target.read_text() == text:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, text)
        assert manifest.trained_with is not None  # build_manifest always starts the per-run records
        manifest.trained_with[cfg.run.name] = trained_with
        manifest.write(results_dir)


def already_recorded(cfg: Config, results_dir: Path) -> bool:
    """A run whose summary was copied into the results after its last epoch is finished, even
    when runs/ is gone (a fresh checkout: runs/ is not committed, the results are)."""
    from seg.run_files import run_directory

    copy = results_dir / "runs" / f"{cfg.run.name}.json"
    if not copy.is_file() or (run_directory(cfg) / "summary.json").is_file():
        return False
    return RunSummary.read(copy).epochs_completed >= cfg.train.epochs


def train_in_process(configs: list[Config], results_dir: Path, manifest: Manifest, progress: bool) -> None:
    """Run the grid one after the other in this process (finished runs return at once)."""
    from seg import training

    trained_with = TrainedWith(jobs=1, machine=machine_description(configs[0].train.device))
    for index, cfg in enumerate(configs, 1):
        print(f"[{index}/{len(configs)}] {cfg.run.name}", flush=True)
        if already_recorded(cfg, results_dir):
            print(f"{cfg.run.name}: finished (recorded in {results_dir / 'runs'}), skipped", flush=True)
            continue
        training.fit(cfg, progress=progress)
        record_run(cfg, results_dir, manifest, trained_with)


def train_in_subprocesses(
    experiment: Experiment,
    runs: list[PlannedRun],
    configs: list[Config],
    results_dir: Path,
    manifest: Manifest,
    jobs: int,
    evaluate: bool = False,
) -> None:
    """Run the grid ``jobs`` at a time, each as ``python -m seg.apps.train`` (the installed seg, from the working
    directory) with its log in the run directory; with ``evaluate``, each run's final model is then scored on
    the test split by ``python -m seg.apps.evaluate`` in the same slot, so that a run stopped later (a visit's
    time running out) cannot leave a trained run without its test scores."""
    from seg.run_files import run_directory

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding seg/: the runs import this seg
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    trained_with = TrainedWith(jobs=jobs, machine=machine_description(configs[0].train.device))

    def one(item: tuple[PlannedRun, Config]) -> tuple[str, int, Path]:
        run, cfg = item
        log = run_directory(cfg) / "compare.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", TRAIN_MODULE, "--config", str(expand_path(experiment.base)), "--no-progress"]
        command += [arg for o in run.overrides for arg in ("--set", o)]
        scoring = [sys.executable, "-m", EVALUATE_MODULE, "--run", str(run_directory(cfg)), "--split", "test"]
        scoring += ["--checkpoint", EVALUATED_CHECKPOINT, "--overlays", "4", "--no-progress"]
        with log.open("w") as handle:

            def logged(argv: list[str]) -> int:
                return subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd()).returncode

            code = logged(command)
            if code == 0:
                record_run(cfg, results_dir, manifest, trained_with)
            if code == 0 and evaluate:  # scored at once, in parallel: evaluate_grid then only copies the record
                code = logged(scoring)
        print(f"{run.name}: {'done' if code == 0 else f'failed (exit {code}), see {log}'}", flush=True)
        return run.name, code, log

    todo = [(run, cfg) for run, cfg in zip(runs, configs, strict=False) if not already_recorded(cfg, results_dir)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        failed = [(name, log) for name, code, log in pool.map(one, todo) if code != 0]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(runs)} runs failed: " + "; ".join(f"{name} (log: {log})" for name, log in failed)
        )


def evaluation_copy(results_dir: Path, run_name: str, split: str = "test") -> Path:
    """Where a run's evaluation on the held-out split is kept with the results: ``runs/<run>.eval-<split>.json``."""
    return results_dir / "runs" / f"{run_name}.eval-{split}.json"


def evaluate_grid(configs: list[Config], results_dir: Path, progress: bool) -> None:
    """Score every run's final model on the test split, with the thresholds and Platt parameters chosen on
    its validation split (seg.run_evaluation), and keep the result beside the summary. Runs already
    evaluated are skipped; a run whose directory is gone (a fresh checkout) cannot be evaluated and is named."""
    from seg.files import write_text_atomic
    from seg.run_evaluation import evaluate_run
    from seg.run_files import run_directory

    missing = []
    for index, cfg in enumerate(configs, 1):
        target = evaluation_copy(results_dir, cfg.run.name)
        run_dir = run_directory(cfg)
        last = run_dir / "checkpoints" / f"{EVALUATED_CHECKPOINT}.pt"
        if target.is_file():
            continue
        if not last.is_file():
            missing.append(cfg.run.name)
            continue
        source = run_dir / f"eval-test-{EVALUATED_CHECKPOINT}.json"
        if not source.is_file() or source.stat().st_mtime < last.stat().st_mtime:
            print(f"[{index}/{len(configs)}] {cfg.run.name}: test split, thresholds chosen on val", flush=True)
            evaluate_run(run_dir, "test", overlays=4, progress=progress, which=EVALUATED_CHECKPOINT)
        EvalResult.read(source)  # a readable record, or a ConfigError naming it
        write_text_atomic(target, source.read_text())
    if missing:
        print(
            f"{len(missing)} run(s) have no {EVALUATED_CHECKPOINT}.pt to evaluate on test "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); their test scores are left out",
            flush=True,
        )


def run_experiment(
    experiment: Experiment,
    profile: str = "quick",
    extra: list[str] | None = None,
    jobs: int = 1,
    results_root: Path | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> Path:
    """Train every run of the grid that is not finished (at most ``limit`` of them, in the plan's order: a
    slice of the grid), copy the summaries, write the manifest, and score the recorded runs on test."""
    extra = list(extra or [])
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    runs = plan_runs(experiment, profile, extra)
    configs = resolve_configs(experiment, runs)
    results_dir = results_directory(experiment, profile, results_root)
    manifest = build_manifest(experiment, profile, runs, configs, extra, results_root, results_dir)
    manifest.write(results_dir)
    print(f"{experiment.name} ({profile}): {len(runs)} runs, results in {results_dir}", flush=True)
    planned = list(zip(runs, configs, strict=True))
    if limit is not None:
        unfinished = [(run, cfg) for run, cfg in planned if not already_recorded(cfg, results_dir)]
        planned = unfinished[:limit]
        left = len(unfinished) - len(planned)
        print(f"--limit {limit}: {len(planned)} of the {len(unfinished)} unfinished runs now, {left} left", flush=True)
    slice_runs, slice_configs = [run for run, _ in planned], [cfg for _, cfg in planned]
    if planned and jobs == 1:
        train_in_process(slice_configs, results_dir, manifest, progress)
    elif planned:
        train_in_subprocesses(
            experiment, slice_runs, slice_configs, results_dir, manifest, jobs, evaluate=manifest.test is not None
        )
    if manifest.test is not None:
        recorded = [cfg for cfg in configs if (results_dir / "runs" / f"{cfg.run.name}.json").is_file()]
        evaluate_grid(recorded, results_dir, progress)
    return results_dir
