"""Tests for seg/experiments/sweeps.py: the committed W&B sweep files equal what the module writes and
every run of their grids is a valid config."""

import pytest
import yaml
from test_experiments_experiment import EXPERIMENTS

from seg.config import expand_path, load_config
from seg.experiments import sweeps
from seg.experiments.experiment import load_experiment


def _grid_points(sweep: dict):
    """Every run of a grid sweep as the bare key=value arguments a W&B agent passes (str(value))."""
    parameters = sweep["parameters"]
    assert {k for k, v in parameters.items() if "values" in v} == {"loss.weighting", "run.seed"}
    fixed = [f"{k}={v['value']}" for k, v in parameters.items() if "value" in v]
    for weighting in parameters["loss.weighting"]["values"]:
        for seed in parameters["run.seed"]["values"]:
            yield [*fixed, f"loss.weighting={weighting}", f"run.seed={seed}"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_sweep_files_match_the_experiment_and_use_valid_keys(path):
    experiment = load_experiment(path)
    expected = sweeps.sweep_files(experiment)
    committed = {p.name: yaml.safe_load(p.read_text()) for p in path.parent.glob(f"{path.stem}*.sweep.yaml")}
    assert committed == expected, "regenerate with: python scripts/compare.py --experiment ... --write-sweeps"
    covered = set()
    for sweep in committed.values():
        assert sweep["method"] == "grid" and "${args_no_hyphens}" in sweep["command"]
        assert set(sweep["parameters"]["run.seed"]["values"]) == set(experiment.seeds)
        names = set()
        for arguments in _grid_points(sweep):
            cfg = load_config(expand_path(experiment.base), arguments)  # every key valid, every value too
            covered.add((cfg.loss.weighting, cfg.loss.apply_as, cfg.loss.negatives))
            assert cfg.logging.wandb.group == f"{experiment.name}-full"
            assert cfg.wandb_name.endswith(f"{cfg.loss.weighting}-s{cfg.run.seed}")  # named by the swept values
            names.add(cfg.wandb_name)
        assert len(names) == len(sweep["parameters"]["loss.weighting"]["values"]) * len(experiment.seeds)
    for overrides in experiment.strategies.values():
        cfg = load_config(expand_path(experiment.base), [*experiment.common, *overrides])
        assert (cfg.loss.weighting, cfg.loss.apply_as, cfg.loss.negatives) in covered
