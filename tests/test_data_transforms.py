"""Tests for seg/data/transforms.py: crop size, no resizing in evaluation, image and per-pixel maps kept aligned."""

import numpy as np
import pytest

from seg.data.transforms import eval_transform, train_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # A.Normalize's defaults (ImageNet)


def sample(height: int, width: int, seed: int = 0) -> dict:
    """What the dataset passes: the image's red channel is the mask (0/255), its green channel sets the weight
    map (1 + 3 * green / 255, distinct per pixel), so any misalignment shows."""
    rng = np.random.default_rng(seed)
    mask = (rng.random((height, width)) > 0.6).astype(np.uint8)
    green = rng.integers(1, 255, (height, width), dtype=np.uint8)
    image = np.stack([mask * 255, green, np.full_like(mask, 50)], axis=-1)
    weight_map = (1 + 3 * green.astype(np.float32) / 255).astype(np.float32)
    valid = np.ones((height, width), np.uint8)
    return {"image": image, "mask": mask[..., None], "valid": valid, "weight_map": weight_map}


def unnormalize(image: np.ndarray) -> np.ndarray:
    """The 0..255 values A.Normalize was given: x = (v / 255 - mean) / std, per channel."""
    return (image * np.array(STD) + np.array(MEAN)) * 255


def assert_aligned(out: dict) -> None:
    """Where valid, the maps follow the image; where padded, everything is 0 (the image before normalising)."""
    values, valid = unnormalize(out["image"]), out["valid"].astype(bool)
    np.testing.assert_array_equal(out["mask"][..., 0][valid], (values[..., 0] > 127)[valid])
    np.testing.assert_allclose(out["weight_map"][valid], 1 + 3 * values[..., 1][valid] / 255, atol=1e-4)
    assert not out["mask"][~valid].any() and not out["weight_map"][~valid].any()
    np.testing.assert_allclose(values[~valid], 0, atol=1e-3)


def test_normalize_by_hand():
    out = eval_transform()(**sample(32, 32))
    red = out["image"][..., 0]
    # 0 -> -0.485 / 0.229 = -2.117904; 255 -> (1 - 0.485) / 0.229 = 2.248908
    assert sorted(np.unique(red.round(5)).tolist()) == [pytest.approx(-2.117904, abs=1e-5), pytest.approx(2.248908)]
    assert out["image"].dtype == np.float32


@pytest.mark.parametrize("height, width", [(50, 70), (32, 32)])
def test_train_output_is_the_crop_size_and_stays_aligned(height, width):
    transform = train_transform(32)
    for seed in range(8):  # several crops, flips and turns
        transform.set_random_seed(seed)
        out = transform(**sample(height, width, seed))
        assert out["image"].shape == (32, 32, 3) and out["mask"].shape == (32, 32, 1)
        assert out["valid"].shape == (32, 32) and out["weight_map"].shape == (32, 32)
        assert out["valid"].all()  # no padding: the image is at least the crop
        assert_aligned(out)


def test_train_pads_a_smaller_image_and_marks_the_padding_ignored():
    transform = train_transform(32)
    for seed in range(8):
        transform.set_random_seed(seed)
        out = transform(**sample(20, 24, seed))
        assert out["image"].shape == (32, 32, 3)
        rows, cols = np.nonzero(out["valid"])
        box = (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        assert box in ((20, 24), (24, 20)) and out["valid"].sum() == 20 * 24  # the image, maybe turned
        assert_aligned(out)


@pytest.mark.parametrize("height, width, padded", [(40, 70, (64, 96)), (64, 96, (64, 96)), (33, 32, (64, 32))])
def test_eval_keeps_the_image_and_pads_bottom_right_to_a_multiple_of_32(height, width, padded):
    given = sample(height, width)
    out = eval_transform()(**given)
    assert out["image"].shape == (*padded, 3) and out["valid"].shape == padded
    np.testing.assert_allclose(unnormalize(out["image"])[:height, :width], given["image"], atol=1e-3)  # no resize
    np.testing.assert_array_equal(out["mask"][:height, :width], given["mask"])
    np.testing.assert_array_equal(out["weight_map"][:height, :width], given["weight_map"])
    assert out["valid"][:height, :width].all() and out["valid"].sum() == height * width
    assert_aligned(out)
