"""seg/data/sampling.py (foreground oversampling) and its use by SegmentationDataset and build_datasets.

The crop plans are a function of (seed, epoch, index): the measured rates below are fixed numbers, checked
against a binomial 99% interval around the configured probability.
"""

import math

import numpy as np
import pytest
import torch
from conftest import REPO, write_png

from seg.config import load_config
from seg.config.specs import MaskSpec
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.folders import find_samples
from seg.data.formats import load_mask
from seg.data.sampling import MAX_LOCATIONS, CropPlan, ForegroundSampler, positive_locations, rarest_first
from seg.data.transforms import train_transform

CROP = 32
SHAPE = (100, 80)  # rows, columns: larger than the crop
LOCATIONS = [
    np.array([[10, 12], [50, 60], [97, 3]], np.int32),  # channel 0
    np.zeros((0, 2), np.int32),  # channel 1: empty in this image
    np.array([[90, 75]], np.int32),  # channel 2
]


def assert_binomial_99(count: int, n: int, p: float) -> None:
    """``count`` successes in ``n`` draws lie in the 99% normal interval p +- 2.576 sqrt(p(1-p)/n)."""
    half = 2.576 * math.sqrt(p * (1 - p) / n)
    assert abs(count / n - p) <= half, f"{count}/{n} = {count / n:.4f}, expected {p} +- {half:.4f}"


def plans(sampler, n, locations=LOCATIONS, shape=SHAPE, seed=0, epoch=0):
    return [sampler.plan(locations, shape, seed, epoch, index) for index in range(n)]


def holds(plan: CropPlan, point, crop: int = CROP) -> bool:
    row, col = point
    return plan.top <= row < plan.top + crop and plan.left <= col < plan.left + crop


# ------------------------------------------------------------------ the coin


@pytest.mark.parametrize("p", [0.33, 0.8])
def test_share_of_forced_plans_matches_the_fraction(p):
    n = 4000
    drawn = plans(ForegroundSampler(p, CROP), n, seed=3, epoch=1)
    forced = sum(plan.forced for plan in drawn)
    assert_binomial_99(forced, n, p)
    for plan in drawn:  # unforced: the usual random crop; forced (positives present): a placed window
        if plan.forced:
            assert plan.channel in (0, 2) and plan.top is not None and plan.left is not None
        else:
            assert plan == CropPlan(forced=False)


def test_fraction_zero_forces_nothing_and_one_forces_everything():
    assert not any(plan.forced for plan in plans(ForegroundSampler(0.0, CROP), 1000))
    assert all(plan.forced and plan.channel is not None for plan in plans(ForegroundSampler(1.0, CROP), 1000))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fraction": -0.1},
        {"fraction": 1.01},
        {"fraction": 0.5, "rule": "common"},
        {"fraction": 0.5, "crop": 0},
        {"fraction": 0.5, "rule": "rarest"},  # no order to rank by
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ForegroundSampler(**({"crop": CROP} | kwargs))


# ------------------------------------------------------------------ the window


def test_every_forced_window_holds_a_location_of_its_channel():
    for plan in plans(ForegroundSampler(1.0, CROP), 2000):
        assert 0 <= plan.top <= SHAPE[0] - CROP and 0 <= plan.left <= SHAPE[1] - CROP
        assert any(holds(plan, point) for point in LOCATIONS[plan.channel]), plan


def test_window_starts_are_uniform_over_the_windows_holding_the_point():
    """A point in the middle: every start whose window holds it occurs, and no other."""
    point = np.array([[40, 45]], np.int32)
    drawn = plans(ForegroundSampler(1.0, CROP), 4000, locations=[point])
    tops = {plan.top for plan in drawn}
    lefts = {plan.left for plan in drawn}
    assert tops == set(range(40 - CROP + 1, 41)) and lefts == set(range(45 - CROP + 1, 46))
    # each of the 32 tops about equally often
    counts = np.bincount([plan.top - (40 - CROP + 1) for plan in drawn], minlength=CROP)
    for count in counts:
        assert_binomial_99(int(count), len(drawn), 1 / CROP)


@pytest.mark.parametrize(
    "point, tops, lefts",
    [
        ((2, 3), range(0, 3), range(0, 4)),  # near the top-left corner: windows start at 0 at the latest
        ((99, 79), range(68, 69), range(48, 49)),  # bottom-right pixel: the last window only
        ((5, 78), range(0, 6), range(47, 49)),  # 2 columns from the right edge
    ],
)
def test_windows_at_the_border_stay_inside_the_image(point, tops, lefts):
    drawn = plans(ForegroundSampler(1.0, CROP), 500, locations=[np.array([point], np.int32)])
    assert {plan.top for plan in drawn} == set(tops)
    assert {plan.left for plan in drawn} == set(lefts)
    assert all(holds(plan, point) for plan in drawn)


def test_a_side_smaller_than_the_crop_starts_at_zero():
    """20 rows (< crop): top 0, the transform pads; 50 columns (> crop): a window holding the point."""
    point = (15, 40)
    drawn = plans(ForegroundSampler(1.0, CROP), 500, locations=[np.array([point], np.int32)], shape=(20, 50))
    assert {plan.top for plan in drawn} == {0}
    assert {plan.left for plan in drawn} == set(range(40 - CROP + 1, 50 - CROP + 1))
    both = plans(ForegroundSampler(1.0, CROP), 50, locations=[np.array([point], np.int32)], shape=(20, CROP))
    assert {(plan.top, plan.left) for plan in both} == {(0, 0)}  # a side equal to the crop: start 0 too


def test_an_image_without_positives_gets_the_usual_random_crop():
    empty = [np.zeros((0, 2), np.int32)] * 3
    for rule in ("uniform", "rarest"):
        sampler = ForegroundSampler(1.0, CROP, rule, (2, 0, 1))
        assert set(plans(sampler, 200, locations=empty)) == {CropPlan(forced=True, channel=None, top=None, left=None)}


# ------------------------------------------------------------------ the channel


def test_uniform_rule_chooses_among_present_channels_equally():
    n = 4000
    drawn = plans(ForegroundSampler(1.0, CROP, "uniform"), n, seed=11)
    chosen = np.bincount([plan.channel for plan in drawn], minlength=3)
    assert chosen[1] == 0  # empty in this image: never
    assert chosen[0] + chosen[2] == n
    assert_binomial_99(int(chosen[0]), n, 0.5)


def test_rarest_rule_chooses_the_rarest_present_channel():
    sampler = ForegroundSampler(1.0, CROP, "rarest", rarest_first=(2, 0, 1))
    assert {plan.channel for plan in plans(sampler, 500)} == {2}  # 2 present: always 2
    without_2 = [LOCATIONS[0], np.array([[5, 5]], np.int32), np.zeros((0, 2), np.int32)]
    assert {plan.channel for plan in plans(sampler, 500, locations=without_2)} == {0}  # then 0, never 1
    only_1 = [np.zeros((0, 2), np.int32), np.array([[5, 5]], np.int32), np.zeros((0, 2), np.int32)]
    assert {plan.channel for plan in plans(sampler, 50, locations=only_1)} == {1}


def test_rarest_rule_ranks_an_unlisted_channel_last():
    sampler = ForegroundSampler(1.0, CROP, "rarest", rarest_first=(3, 2, 1))
    present = [np.array([[5, 5]], np.int32), np.array([[6, 6]], np.int32), np.zeros((0, 2), np.int32)]
    assert {plan.channel for plan in plans(sampler, 50, locations=present)} == {1}


def test_rarest_first_orders_by_positive_pixels_ties_by_index():
    assert rarest_first(np.array([500, 20, 3])) == (2, 1, 0)
    assert rarest_first(np.array([5, 1, 3, 1, 0])) == (4, 1, 3, 2, 0)
    assert rarest_first([7, 7, 7]) == (0, 1, 2)
    assert all(isinstance(c, int) for c in rarest_first(np.array([2, 1], np.int64)))


# ------------------------------------------------------------------ determinism


def test_plans_depend_on_seed_epoch_and_index_only():
    sampler = ForegroundSampler(0.5, CROP)
    in_order = {index: sampler.plan(LOCATIONS, SHAPE, 7, 2, index) for index in range(300)}
    shuffled = list(range(300))
    np.random.default_rng(0).shuffle(shuffled)
    other = ForegroundSampler(0.5, CROP)  # another worker's copy, asked in another order
    assert {index: other.plan(LOCATIONS, SHAPE, 7, 2, index) for index in shuffled} == in_order
    for batch in (1, 3, 8, 64):  # batches of any size, items of each batch asked in reverse
        for start in range(0, 300, batch):
            for index in reversed(range(start, min(start + batch, 300))):
                assert sampler.plan(LOCATIONS, SHAPE, 7, 2, index) == in_order[index]
    next_epoch = [sampler.plan(LOCATIONS, SHAPE, 7, 3, index) for index in range(300)]
    assert sum(a != b for a, b in zip(in_order.values(), next_epoch, strict=True)) > 150
    other_seed = [sampler.plan(LOCATIONS, SHAPE, 8, 2, index) for index in range(300)]
    assert sum(a != b for a, b in zip(in_order.values(), other_seed, strict=True)) > 150


# ------------------------------------------------------------------ positive_locations


def test_positive_locations_are_a_bounded_sample_of_valid_positives():
    rng = np.random.default_rng(0)
    target = np.zeros((120, 90, 4), np.uint8)
    target[..., 0] = rng.random((120, 90)) < 0.5  # ~5400 positives: sampled down
    target[7, 8, 1] = target[100, 3, 1] = 1  # two positives: kept, both
    target[..., 3] = rng.random((120, 90)) < 0.3  # ~3200, half of them ignored
    valid = np.ones((120, 90), bool)
    valid[:, 45:] = False
    target[:, 45:, 2] = 1  # channel 2: positives only where ignored

    found = positive_locations(target, valid, key=5)
    assert len(found) == 4 and all(points.dtype == np.int32 and points.shape[1] == 2 for points in found)
    assert len(found[0]) == MAX_LOCATIONS and len(found[3]) == MAX_LOCATIONS
    np.testing.assert_array_equal(found[1], [[7, 8], [100, 3]])
    assert found[2].shape == (0, 2)
    for channel in (0, 3):
        points = found[channel]
        assert len({tuple(p) for p in points.tolist()}) == MAX_LOCATIONS  # no repeats
        assert target[points[:, 0], points[:, 1], channel].all() and valid[points[:, 0], points[:, 1]].all()
        order = points[:, 0] * 1000 + points[:, 1]
        assert (np.diff(order) > 0).all()  # row-major order, as np.nonzero gives
    assert (found[3][:, 1] < 45).all()  # ignored pixels never

    again = positive_locations(target, valid, key=5)
    for a, b in zip(found, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other_key = positive_locations(target, valid, key=6)
    assert not np.array_equal(found[0], other_key[0])  # the sample is the image's own
    np.testing.assert_array_equal(found[1], other_key[1])  # nothing to sample: all of them


def test_positive_locations_of_an_empty_mask():
    found = positive_locations(np.zeros((10, 12, 2), np.uint8), np.ones((10, 12), bool), key=0)
    assert [points.shape for points in found] == [(0, 2), (0, 2)]
    ignored = positive_locations(np.ones((10, 12, 1), np.uint8), np.zeros((10, 12), bool), key=0)
    assert ignored[0].shape == (0, 2)


# ------------------------------------------------------------------ with the dataset

CLASSES = ("big", "mid", "rare")
SIZES = [(90, 70), (70, 100), (20, 50), (25, 25), (64, 64)]  # rows, columns; some smaller than the crop


def multilabel_set(root):
    """Images whose RGB planes are the three channels (0/255), so alignment can be read back.

    "big" a block, "mid" a few pixels (absent from image 1), "rare" one pixel near a corner (absent from image 3);
    image 4 has no positive at all.
    """
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate(SIZES):
        planes = np.zeros((3, h, w), np.uint8)
        if i != 4:
            planes[0, h // 3 : h // 3 + 6, w // 4 : w // 4 + 8] = 255
            if i != 1:
                planes[1][rng.integers(0, h, 3), rng.integers(0, w, 3)] = 255
            if i != 3:
                planes[2, h - 2, w - 1 if i % 2 else 1] = 255
        write_png(root / "images" / f"s{i}.png", np.ascontiguousarray(planes.transpose(1, 2, 0)))
        for name, plane in zip(CLASSES, planes, strict=True):
            write_png(root / "masks" / name / f"s{i}.png", plane)
    spec = MaskSpec("multilabel", CLASSES)
    return find_samples(root, spec), spec


def planes_of(image):
    """Undo A.Normalize: the 0/255 RGB planes back as a {0,1} [3,H,W] tensor."""
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((image * std + mean) * 255 > 127).float()


def foreground_dataset(samples, spec, sampler, length=None, seed=0):
    return SegmentationDataset(
        samples,
        spec,
        train_transform(CROP),
        length=length,
        seed=seed,
        sample_map=lambda s, target, valid: 1.0 + 2.0 * target[..., 2],
        foreground=sampler,
    )


@pytest.mark.parametrize("rule", ["uniform", "rarest"])
def test_every_forced_crop_holds_a_positive_of_its_channel_after_the_transform(tmp_path, rule):
    samples, spec = multilabel_set(tmp_path)
    sampler = ForegroundSampler(1.0, CROP, rule, rarest_first=(2, 1, 0))
    length = 12 * len(samples)
    dataset = foreground_dataset(samples, spec, sampler, length=length, seed=4)
    dataset.set_epoch(2)
    chosen = []
    for index in range(length):
        target, valid = load_mask(samples[index % len(samples)].masks, spec)
        plan = dataset.crop_plan(index, target, valid)
        item = dataset[index]
        assert item["image"].shape == (3, CROP, CROP) and item["target"].shape == (3, CROP, CROP)
        torch.testing.assert_close(planes_of(item["image"]), item["target"])  # image and mask moved together
        inside = item["valid"][0]  # padding (small images): weight 0
        torch.testing.assert_close(item["weight_map"][0][inside], 1.0 + 2.0 * item["target"][2][inside])
        assert plan.forced
        if index % len(samples) == 4:  # no positive: the usual random crop
            assert plan.channel is None and not item["target"].any()
            continue
        positive = (item["target"][plan.channel] > 0) & item["valid"][0]
        assert positive.any(), (index, plan)
        if rule == "rarest":
            assert plan.channel == (1 if index % len(samples) == 3 else 2)  # rare absent from image 3: then mid
        chosen.append(plan.channel)
    if rule == "uniform":
        assert set(chosen) == {0, 1, 2}


def test_forced_crops_of_small_images_are_padded_as_ignored(tmp_path):
    samples, spec = multilabel_set(tmp_path)
    dataset = foreground_dataset(samples, spec, ForegroundSampler(1.0, CROP, "rarest", (2, 1, 0)), length=50)
    for index in range(2, 50, 5):  # image 2: 20 x 50
        item = dataset[index]
        assert int(item["valid"].sum()) == 20 * CROP and item["target"][2].any()
    for index in range(3, 50, 5):  # image 3: 25 x 25
        item = dataset[index]
        assert int(item["valid"].sum()) == 25 * 25 and item["target"][1].any()


def test_forcing_finds_the_rare_pixel_that_random_crops_mostly_miss(tmp_path):
    samples, spec = multilabel_set(tmp_path)
    samples = samples[:2]  # the large images
    forced = foreground_dataset(samples, spec, ForegroundSampler(1.0, CROP, "rarest", (2, 1, 0)), length=40)
    plain = foreground_dataset(samples, spec, None, length=40)
    assert all(forced[i]["target"][2].any() for i in range(40))
    assert sum(bool(plain[i]["target"][2].any()) for i in range(40)) < 30  # a 32 px crop of 70 x 100


def test_dataset_items_do_not_depend_on_the_order_batches_or_workers(tmp_path):
    samples, spec = multilabel_set(tmp_path)
    sampler = ForegroundSampler(0.5, CROP, "uniform")
    length = 20

    def make():
        dataset = foreground_dataset(samples, spec, sampler, length=length, seed=9)
        dataset.set_epoch(1)
        return dataset

    reference = make()
    expected = [reference[index] for index in range(length)]
    shuffled = make()  # a fresh dataset (empty location cache), asked in another order
    order = list(range(length))
    np.random.default_rng(3).shuffle(order)
    got = {index: shuffled[index] for index in order}
    for index in range(length):
        for key in ("image", "target", "valid", "weight_map"):
            assert torch.equal(got[index][key], expected[index][key]), (index, key)
    for batch_size, workers in ((3, 0), (7, 2)):
        loader = torch.utils.data.DataLoader(
            make(), batch_size=batch_size, num_workers=workers, collate_fn=pad_collate, shuffle=False
        )
        images = torch.cat([batch["image"] for batch in loader])
        assert torch.equal(images, torch.stack([item["image"] for item in expected]))
    later = make()
    later.set_epoch(2)
    assert sum(not torch.equal(later[i]["image"], expected[i]["image"]) for i in range(length)) > length // 2


def test_build_datasets_wires_the_sampling_keys(synthetic_root):
    from seg.run_data import build_datasets, prepare_data

    config = REPO / "configs" / "synthetic.yaml"
    common = [f"data.root={synthetic_root}", "data.image_size=64"]
    cfg = load_config(
        config,
        [*common, "data.sampling=foreground", "data.foreground_fraction=0.6", "data.foreground_channel=rarest"],
    )
    data = prepare_data(cfg, progress=False)
    train, val = build_datasets(cfg, data, None)
    # synthetic: cell ~35% of pixels, nucleus a few %, speck well under 1%
    assert train.foreground == ForegroundSampler(0.6, 64, "rarest", (2, 1, 0))
    assert val.foreground is None
    plain, _ = build_datasets(load_config(config, common), data, None)
    assert plain.foreground is None  # data.sampling: uniform (the default)
