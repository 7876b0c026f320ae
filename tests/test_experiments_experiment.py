"""Tests for seg/experiments/experiment.py: the committed experiment files validate for every profile;
a bad run config names the strategy and seed."""

import pytest
from conftest import REPO
from test_experiments_grid import TINY

from seg.experiments.experiment import load_experiment, plan_runs, resolve_configs

EXPERIMENTS = sorted(p for p in (REPO / "experiments").glob("*.yaml") if not p.name.endswith(".sweep.yaml"))


def test_a_bad_run_config_names_strategy_and_seed(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("loss.weighting: none}", "loss.weighting: nothing}"))
    with pytest.raises(Exception, match="strategy none, seed 0"):
        resolve_configs(load_experiment(bad), plan_runs(load_experiment(bad), "ci"))


GRIDS = {
    "weighting_isbi2012": {"none", "global", "per_batch", "border_map"},
    "weighting_camvid": {"none", "global", "per_channel", "per_batch", "class_map"},
}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_files_validate_for_every_profile(path):
    experiment = load_experiment(path)
    assert len(experiment.seeds) >= 3 and {"quick", "full"} <= set(experiment.profiles)
    if experiment.name in GRIDS:
        assert set(experiment.strategies) == GRIDS[experiment.name]
    for profile in experiment.profiles:
        runs = plan_runs(experiment, profile)
        configs = resolve_configs(experiment, runs)
        assert all(c.loss.normalize for c in configs)
        assert (
            len({(c.data.split_seed, c.train.epochs, c.data.image_size, c.data.samples_per_epoch) for c in configs})
            == 1
        )


LOSS_ARMS = {"bce", "dice", "dice_bce", "focal", "tversky", "bce_oversampled", "dice_bce_oversampled"}


@pytest.mark.parametrize("name", ["losses_isbi2012", "losses_synthetic", "losses_camvid"])
def test_loss_experiments_have_the_arms_and_the_bce_reference(name):
    experiment = load_experiment(REPO / "experiments" / f"{name}.yaml")
    assert LOSS_ARMS <= set(experiment.strategies) and len(experiment.strategies) >= 9
    assert experiment.reference == "bce"
    resolved = resolve_configs(experiment, plan_runs(experiment, "quick"))[:: len(experiment.seeds)]
    configs = dict(zip(experiment.strategies, resolved, strict=True))
    assert [t.name for t in configs["bce"].loss.terms] == ["bce"] and configs["bce"].loss.weighting == "none"
    assert [t.name for t in configs["dice_bce"].loss.terms] == ["dice", "bce"]
    over = configs["dice_bce_oversampled"].data
    assert (over.sampling, over.foreground_fraction) == ("foreground", 0.33)
    assert configs["bce"].data.sampling == "uniform"
    weighted = [c.loss.weighting for c in configs.values() if c.loss.weighting != "none"]
    assert weighted and all(w in ("global", "per_channel") for w in weighted)


def test_an_arm_may_set_sampling_keys_but_not_the_budget(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(TINY.replace("loss.weighting: none}", "loss.weighting: none, data.sampling: foreground}"))
    assert plan_runs(load_experiment(good), "ci")[0].overrides.count("data.sampling=foreground") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("loss.weighting: none}", "loss.weighting: none, data.image_size: 64}"))
    with pytest.raises(Exception, match="strategy none sets data.image_size"):
        load_experiment(bad)
