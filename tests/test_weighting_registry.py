"""Tests for seg/weighting/registry.py: registering and looking up strategies by name, the config checks,
what holds for every built-in strategy, and a toy strategy registered here only, trained end to end:
adding a strategy touches nothing but the registry. Each built-in strategy's own numbers:
tests/test_weighting_strategies_<module>.py."""

import pytest
import torch
from conftest import REPO, binary_batch, build, counts, loss_config

from seg import checkpoint
from seg.config import BASE_CONFIG, ConfigError, load_config
from seg.weighting.registry import (
    Strategy,
    check_config,
    get_strategy,
    register,
    strategy_for,
    strategy_names,
    unregister,
)

BUILTIN = ("border_map", "class_map", "global", "none", "per_batch", "per_channel")


# ------------------------------------------------------------------------------ the registry


def test_the_builtin_strategies_are_registered_by_name():
    assert strategy_names() == BUILTIN
    for name in BUILTIN:
        assert get_strategy(name).name == name and issubclass(get_strategy(name), Strategy)
        assert strategy_for(loss_config(name)) is get_strategy(name)
    with pytest.raises(ValueError, match="unknown weighting strategy 'focal'; registered: "):
        get_strategy("focal")
    with pytest.raises(ValueError, match="'none' is already registered"):
        register("none")(type("Again", (Strategy,), {}))


def test_the_config_accepts_exactly_the_registered_names():
    with pytest.raises(ConfigError, match="loss.weighting.*must be one of " + ", ".join(BUILTIN)):
        check_config(load_config(BASE_CONFIG, ["loss.weighting=focal"]))
    for name in ("none", "per_batch", "class_map"):
        cfg = load_config(BASE_CONFIG, [f"loss.weighting={name}"])
        check_config(cfg)
        assert cfg.loss.weighting == name


# ------------------------------------------------------------------------ every built-in strategy


def test_only_border_map_checks_the_config_and_needs_instances():
    for name in BUILTIN[1:]:  # the others check nothing and need no instances
        get_strategy(name).check_config(loss_config(name, instances_from="positive"), "index")
        assert not get_strategy(name).needs_instances(loss_config(name))


def test_every_strategy_state_follows_the_state_dict():
    for name in BUILTIN:
        strategy = build(name, counts([20], valid=100, all_zero=80), "binary")
        fresh = build(name, counts([50], valid=100, all_zero=50), "binary")
        fresh.load_state_dict(strategy.state_dict())
        batch = binary_batch(1) | {"weight_map": torch.full((1, 1, 2, 2), 0.5)}
        a, b = strategy.batch_weight(batch), fresh.batch_weight(batch)
        assert (a is None and b is None) or torch.equal(a, b), name


# ---------------------------------------------------------------- a strategy added by a test


class Toy(Strategy):
    """pos_weight 1, 2, 3 ... per channel; remembers the counts it was built from; refuses apply_as weight."""

    def __init__(self, counts, spec, loss):
        super().__init__(counts, spec, loss)
        self.register_buffer("weight", torch.arange(1.0, spec.num_classes + 1).view(-1, 1, 1))
        self.register_buffer("positives", torch.as_tensor(counts.positive_pixels))

    @classmethod
    def check_config(cls, loss, mask_format):
        if loss.apply_as != "pos_weight":
            raise ValueError("loss.apply_as: the toy strategy needs pos_weight")

    def batch_weight(self, batch):
        return self.weight

    def report(self, train, class_names):
        return {"pos_weight": self.weight.flatten().tolist(), "toy_channels": list(class_names)}


@pytest.fixture
def toy():
    register("toy")(Toy)
    yield Toy
    unregister("toy")


def test_a_strategy_registered_by_a_test_trains_end_to_end(toy, tmp_path, synthetic_root):
    from seg.run_data import prepare_data
    from seg.training import fit

    tiny = ["data.image_size=64", "train.batch_size=4", "train.max_steps_per_epoch=2", "data.max_val_images=2"]
    tiny += ["model.encoder=resnet18", "logging.wandb.mode=disabled", "train.epochs=1"]
    overrides = [f"run.out_dir={tmp_path}", f"data.root={synthetic_root}", "loss.weighting=toy", *tiny]
    with pytest.raises(ConfigError, match="the toy strategy needs pos_weight"):
        fit(load_config(REPO / "configs" / "synthetic.yaml", [*overrides, "loss.apply_as=weight"]), progress=False)
    cfg = load_config(REPO / "configs" / "synthetic.yaml", overrides)
    summary = fit(cfg, progress=False)
    assert summary["weighting"] == "toy" and summary["pos_weight"] == [1.0, 2.0, 3.0]
    assert summary["toy_channels"] == ["cell", "nucleus", "speck"]
    # the engine's own measure of the weights applied: mean weight on positives / on negatives
    assert summary["effective_pos_weight"] == pytest.approx([1.0, 2.0, 3.0], rel=1e-6)
    assert 1.0 < summary["mean_applied_weight"] < 3.0
    saved = checkpoint.load(tmp_path / "synthetic" / "checkpoints" / "last.pt")["criterion"]
    assert saved["strategy.weight"].flatten().tolist() == [1.0, 2.0, 3.0]
    positives = prepare_data(cfg, progress=False).train_counts.positive_pixels
    assert saved["strategy.positives"].tolist() == positives.tolist() and positives.min() > 0
    unregister("toy")
    with pytest.raises(ConfigError, match="loss.weighting.*got 'toy'"):
        check_config(load_config(REPO / "configs" / "synthetic.yaml", overrides))


def test_check_config_refuses_unknown_names_and_what_a_strategy_refuses():
    # The schema takes any name; the registry checks it (and the strategy's own combinations)
    # before fit() reads or writes anything.
    camvid = REPO / "configs" / "camvid.yaml"
    check_config(load_config(camvid))
    with pytest.raises(ConfigError, match="border_map needs instances"):
        check_config(load_config(camvid, ["loss.weighting=border_map"]))
    with pytest.raises(ConfigError, match="loss.weighting': must be one of border_map, class_map, global, none"):
        check_config(load_config(camvid, ["loss.weighting=focal"]))
