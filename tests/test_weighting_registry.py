"""Tests for seg/weighting/registry.py and the strategies it registers: each strategy's numbers by hand
on tiny tensors, invariances between strategies, their config checks, and a toy strategy registered
here only, trained end to end: adding a strategy touches nothing but the registry."""

import numpy as np
import pytest
import torch
from conftest import REPO

from seg import checkpoint
from seg.config import BASE_CONFIG, ConfigError, MaskSpec, load_config
from seg.config.schema import LossConfig
from seg.data.counts import MaskCounts
from seg.losses import weighted_bce
from seg.weighting.border import border_weight_map, connected_instances
from seg.weighting.formulas import batch_counts, per_batch_pos_weight
from seg.weighting.registry import (
    Strategy,
    build_strategy,
    check_config,
    get_strategy,
    register,
    strategy_for,
    strategy_names,
    unregister,
)
from seg.weighting.strategies.class_map import class_counts

CLAMP = (0.001, 1000.0)
BUILTIN = ("border_map", "class_map", "global", "none", "per_batch", "per_channel")


def loss_config(weighting="none", negatives="pixels", ema=None, instances_from="instance", apply_as="pos_weight"):
    return LossConfig.model_validate(
        {
            "weighting": weighting,
            "apply_as": apply_as,
            "negatives": negatives,
            "clamp": CLAMP,
            "normalize": False,
            "stats_file": None,
            "ema": ema,
            "border": {"instances_from": instances_from, "connectivity": 4, "w0": 10.0, "sigma": 5.0},
        }
    )


def counts(positive, valid, all_zero) -> MaskCounts:
    positive = np.asarray(positive, dtype=np.int64)
    return MaskCounts(len(positive), positive_pixels=positive, valid_pixels=valid, all_zero_pixels=all_zero)


def build(name, mask_counts, fmt="multilabel", **loss):
    spec = MaskSpec(fmt, tuple(f"c{i}" for i in range(mask_counts.num_channels)))
    return build_strategy(loss_config(name, **loss), mask_counts, spec)


def masks():
    """2 images, 2 channels, 2x2 pixels; one pixel of image 1 ignored (as in test_weighting_formulas).

    Positives (valid): channel 0: 3, channel 1: 1; valid pixels 7; all-zero valid pixels 4.
    """
    target = torch.zeros(2, 2, 2, 2)
    target[0, 0, 0, 0] = target[0, 0, 0, 1] = target[1, 0, 0, 0] = 1
    target[0, 1, 0, 1] = target[1, 1, 1, 1] = 1
    valid = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    valid[1, 0, 1, 1] = False
    return {"target": target, "valid": valid}


DATASET = counts([3, 1], valid=7, all_zero=4)  # the counts of masks()


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


# ------------------------------------------------------------------------------- strategies


def test_none_gives_no_weight():
    strategy = build("none", counts([1], 4, 3), "binary")
    assert strategy.batch_weight(masks()) is None
    assert strategy.report({}, ["a"]) == {"pos_weight": None}
    assert dict(strategy.state_dict()) == {}
    assert not strategy.needs_instances(loss_config()) and strategy.sample_map(loss_config(), None) is None


@pytest.mark.parametrize("negatives, expected", [("pixels", (4 + 6) / (3 + 1)), ("all_zero", (4 + 4) / (3 + 1))])
def test_global_pools_the_channels(negatives, expected):
    strategy = build("global", DATASET, negatives=negatives)
    weight = strategy.batch_weight(masks())
    assert weight.shape == () and weight.item() == pytest.approx(expected)
    assert strategy.report({}, ["a", "b"]) == {"pos_weight": pytest.approx(expected)}


@pytest.mark.parametrize("negatives, expected", [("pixels", [4 / 3, 6 / 1]), ("all_zero", [4 / 3, 4 / 1])])
def test_per_channel_by_hand(negatives, expected):
    strategy = build("per_channel", DATASET, negatives=negatives)
    weight = strategy.batch_weight(masks())
    assert weight.shape == (2, 1, 1)
    torch.testing.assert_close(weight.flatten(), torch.tensor(expected))
    assert strategy.report({}, ["a", "b"]) == {"pos_weight": pytest.approx(expected)}


def test_per_channel_with_one_channel_equals_global():
    mask_counts = counts([30], valid=100, all_zero=70)
    glob = build("global", mask_counts, "binary")
    chan = build("per_channel", mask_counts, "binary")
    assert glob.fixed.item() == pytest.approx(70 / 30)
    assert chan.fixed.shape == (1, 1, 1) and chan.fixed.item() == pytest.approx(glob.fixed.item())
    assert glob.report({}, ["a"])["pos_weight"] == pytest.approx(70 / 30)
    assert chan.report({}, ["a"])["pos_weight"] == pytest.approx([70 / 30])


def test_a_channel_without_positives_warns_and_takes_the_clamp_max():
    with pytest.warns(UserWarning, match=r"channel\(s\) 1 have no positive pixels.*clamped to 1000.0"):
        strategy = build("per_channel", counts([3, 0], valid=7, all_zero=4))
    assert strategy.fixed.flatten().tolist() == [pytest.approx(4 / 3), 1000.0]


@pytest.mark.parametrize("negatives", ["pixels", "all_zero"])
def test_per_batch_on_the_whole_dataset_equals_per_channel(negatives):
    batch = masks()
    per_channel = build("per_channel", DATASET, negatives=negatives)
    per_batch = build("per_batch", DATASET, negatives=negatives)
    torch.testing.assert_close(per_batch.batch_weight(batch), per_channel.fixed)
    direct = per_batch_pos_weight(batch_counts(batch["target"], batch["valid"]), per_channel.fixed, negatives, CLAMP)
    torch.testing.assert_close(direct, per_channel.fixed)
    assert per_batch.report({"mean_channel_weight": [1.5, 2.5]}, ["a", "b"]) == {"pos_weight": [1.5, 2.5]}


def binary_batch(positives: int) -> dict:
    """One 2x2 binary image with ``positives`` positive pixels."""
    target = torch.zeros(1, 1, 2, 2)
    target.view(-1)[:positives] = 1
    return {"target": target, "valid": torch.ones(1, 1, 2, 2, dtype=torch.bool)}


def test_per_batch_ema_by_hand_and_as_the_formula_chains_it():
    strategy = build("per_batch", counts([1], 4, 3), "binary", ema=0.9)
    assert not strategy.has_previous
    weights = [strategy.batch_weight(binary_batch(n)).item() for n in (1, 2, 1)]
    # 1 of 4 positive: 3 (no previous value: the current one); 2 of 4: 1 -> .9*3 + .1*1 = 2.8;
    # 1 of 4: 3 -> .9*2.8 + .1*3 = 2.82
    assert weights == pytest.approx([3.0, 2.8, 2.82])
    assert strategy.has_previous and strategy.previous.item() == pytest.approx(2.82)
    # bit for bit what per_batch_pos_weight gives with previous=None first, then chained
    fallback, chained, previous = strategy.dataset_pos_weight, [], None
    for n in (1, 2, 1):
        batch = binary_batch(n)
        previous = per_batch_pos_weight(
            batch_counts(batch["target"], batch["valid"]), fallback, "pixels", CLAMP, previous, 0.9
        )
        chained.append(previous.item())
    assert weights == chained
    without = build("per_batch", counts([1], 4, 3), "binary")
    assert [without.batch_weight(binary_batch(n)).item() for n in (1, 2, 1)] == pytest.approx([3.0, 1.0, 3.0])


def test_per_batch_makes_no_host_sync():
    """fullgraph compile fails on .item() and on Python branches over tensor values (the EMA flag too)."""
    eager = build("per_batch", DATASET, negatives="all_zero", ema=0.5)
    compiled_strategy = build("per_batch", DATASET, negatives="all_zero", ema=0.5)
    compiled = torch.compile(compiled_strategy.batch_weight, fullgraph=True, backend="eager")
    for batch in (masks(), {"target": masks()["target"].flip(0), "valid": masks()["valid"]}):
        torch.testing.assert_close(compiled(batch), eager.batch_weight(batch))
    torch.testing.assert_close(compiled_strategy.previous, eager.previous)


def test_class_counts_per_format():
    mask_counts = counts([30, 5], valid=100, all_zero=68)
    np.testing.assert_array_equal(class_counts(mask_counts, MaskSpec("multilabel", ("a", "b"))), [30, 5, 68])
    np.testing.assert_array_equal(class_counts(mask_counts, MaskSpec("index", ("a", "b"))), [30, 5])
    for fmt in ("binary", "instance"):
        per_class = class_counts(counts([20], valid=100, all_zero=80), MaskSpec(fmt, ("a",)))
        np.testing.assert_array_equal(per_class, [80, 20])


def test_class_map_by_hand():
    # binary, 20 positives of 100: freqs .8 .2, median .5 -> weights .625 (negative), 2.5 (positive)
    strategy = build("class_map", counts([20], valid=100, all_zero=80), "binary")
    torch.testing.assert_close(strategy.class_weights, torch.tensor([0.625, 2.5]))
    batch = {"target": torch.tensor([[1.0, 0], [0, 1]]).view(1, 1, 2, 2), "valid": torch.ones(1, 1, 2, 2, dtype=bool)}
    batch["valid"][0, 0, 1, 1] = False
    torch.testing.assert_close(
        strategy.batch_weight(batch), torch.tensor([[2.5, 0.625], [0.625, 0.0]]).view(1, 1, 2, 2)
    )
    sums = weighted_bce(
        torch.zeros(1, 1, 2, 2), batch["target"], batch["valid"], strategy.batch_weight(batch), "weight"
    )[1]
    report = strategy.report({"sums": sums, "map_max": 2.5}, ["a"])
    assert report == {
        "pos_weight": None,
        "weight_map_stats": {"a": {"mean": pytest.approx((2.5 + 0.625 + 0.625) / 3), "max": 2.5}},
        "class_weights": [0.625, 2.5],
    }


def test_class_map_on_binary_with_normalize_equals_global():
    """On binary masks class_map (as weight) with normalize equals global pos_weight."""
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 1, 6, 6, generator=g) > 0.7).float()
    valid = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    logits = torch.randn(2, 1, 6, 6, generator=g)
    mask_counts = counts([int(target.sum())], valid=72, all_zero=72 - int(target.sum()))
    class_map = build("class_map", mask_counts, "binary")
    glob = build("global", mask_counts, "binary")
    batch = {"target": target, "valid": valid}
    a, _ = weighted_bce(logits, target, valid, class_map.batch_weight(batch), "weight", normalize=True)
    b, _ = weighted_bce(logits, target, valid, glob.batch_weight(batch), "pos_weight", normalize=True)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_border_map_adds_the_border_term_on_valid_pixels():
    strategy = build("border_map", counts([2], valid=4, all_zero=2), "binary")
    target = torch.tensor([[1.0, 0], [0, 1]]).view(1, 1, 2, 2)
    valid = torch.tensor([[True, True], [True, False]]).view(1, 1, 2, 2)
    term = torch.tensor([[0.5, 2.0], [0.0, 9.0]]).view(1, 1, 2, 2)
    weight = strategy.batch_weight({"target": target, "valid": valid, "weight_map": term})
    # balanced classes: median freq 0.5 / 0.5 = 1 for both; ignored pixel 0
    torch.testing.assert_close(weight, torch.tensor([[1.5, 3.0], [1.0, 0.0]]).view(1, 1, 2, 2))


def test_border_map_config_checks_and_instances():
    border_map = get_strategy("border_map")
    with pytest.raises(ValueError, match="border_map needs instances; index masks"):
        border_map.check_config(loss_config("border_map"), "index")
    with pytest.raises(ValueError, match="positive .connected components of one class. needs a binary mask"):
        border_map.check_config(loss_config("border_map", instances_from="positive"), "multilabel")
    border_map.check_config(loss_config("border_map", instances_from="positive"), "binary")
    border_map.check_config(loss_config("border_map"), "multilabel")
    assert border_map.needs_instances(loss_config("border_map"))
    assert not border_map.needs_instances(loss_config("border_map", instances_from="negative"))
    for name in BUILTIN[1:]:  # the others check nothing and need no instances
        get_strategy(name).check_config(loss_config(name, instances_from="positive"), "index")
        assert not get_strategy(name).needs_instances(loss_config(name))
    with pytest.raises(ConfigError, match="border_map needs instances"):
        check_config(load_config(REPO / "configs" / "camvid.yaml", ["loss.weighting=border_map"]))


def test_border_map_sample_map_is_the_cached_border_term(tmp_path):
    class Sample:  # what the dataset passes: the mask file is the cache key
        masks = (tmp_path / "mask.png",)
        instances = None

    Sample.masks[0].write_bytes(b"mask")
    target = np.zeros((12, 12, 1), np.uint8)
    target[2:5, 2:5] = target[2:5, 7:10] = 1  # two squares 2 px apart
    valid = np.ones((12, 12), bool)
    loss = loss_config("border_map", instances_from="positive")
    sample_map = get_strategy("border_map").sample_map(loss, tmp_path / "cache")
    expected = border_weight_map(connected_instances(target[..., 0] > 0, 4), 10.0, 5.0)
    np.testing.assert_array_equal(sample_map(Sample, target, valid), expected)
    assert expected.max() > 1 and len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert get_strategy("class_map").sample_map(loss, tmp_path) is None


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
