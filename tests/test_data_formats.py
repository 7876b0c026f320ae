"""seg/data/formats.py: mask decoding per format, pixel values pinned on small fixtures; bad values refused."""

import numpy as np
import pytest
from conftest import write_png

from seg.config.specs import MaskSpec
from seg.data.counts import measure_mask
from seg.data.formats import allowed_values, decode_instances, load_mask, value_counts
from seg.data.reading import read_raw
from seg.errors import DataError


def test_binary_positive_values_select_the_class(tmp_path):
    raw = np.array([[0, 255], [255, 0]], np.uint8)
    path = write_png(tmp_path / "m.png", raw)
    target, valid = load_mask((path,), MaskSpec("binary", ("membrane",), positive_values=(0,)))
    assert target.shape == (2, 2, 1) and valid.all()
    np.testing.assert_array_equal(target[..., 0], [[1, 0], [0, 1]])  # 0 = membrane = positive (ISBI)
    target, _ = load_mask((path,), MaskSpec("binary", ("cell",), positive_values=(255,)))
    np.testing.assert_array_equal(target[..., 0], [[0, 1], [1, 0]])


def test_binary_0_1_masks(tmp_path):
    path = write_png(tmp_path / "m.png", np.array([[0, 1, 1]], np.uint8))
    target, _ = load_mask((path,), MaskSpec("binary", ("x",), positive_values=(1,)))
    np.testing.assert_array_equal(target[..., 0], [[0, 1, 1]])


def test_binary_value_128_is_refused_with_file_and_value(tmp_path):
    path = write_png(tmp_path / "m.png", np.array([[0, 128, 255]], np.uint8))
    with pytest.raises(DataError, match=r"m\.png: value\(s\) 128 not valid for a binary mask.*interpolation"):
        load_mask((path,), MaskSpec("binary", ("x",), positive_values=(255,)))


def test_binary_mask_stored_as_rgb_is_refused(tmp_path):
    path = write_png(tmp_path / "m.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="stored as RGB"):
        load_mask((path,), MaskSpec("binary", ("x",), positive_values=(255,)))


def test_index_one_hot_and_ignore(tmp_path):
    raw = np.array([[0, 1, 2], [11, 2, 0]], np.uint8)
    path = write_png(tmp_path / "m.png", raw)
    target, valid = load_mask((path,), MaskSpec("index", ("a", "b", "c"), ignore_index=11))
    np.testing.assert_array_equal(valid, [[1, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(target[..., 0], [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(target[..., 1], [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(target[..., 2], [[0, 0, 1], [0, 1, 0]])
    assert target[1, 0].sum() == 0  # the ignored pixel belongs to no class


def test_index_class_out_of_range_is_refused(tmp_path):
    path = write_png(tmp_path / "m.png", np.array([[0, 14]], np.uint8))
    with pytest.raises(DataError, match=r"m\.png: value\(s\) 14 not valid for an index mask with 11 classes"):
        load_mask((path,), MaskSpec("index", tuple("abcdefghijk"), ignore_index=11))


def test_multilabel_per_channel_files_overlap(tmp_path):
    a = write_png(tmp_path / "a.png", np.array([[255, 255, 0]], np.uint8))
    b = write_png(tmp_path / "b.png", np.array([[0, 255, 0]], np.uint8))
    target, valid = load_mask((a, b), MaskSpec("multilabel", ("a", "b")))
    np.testing.assert_array_equal(target[0], [[1, 0], [1, 1], [0, 0]])
    assert valid.all()


def test_multilabel_one_multichannel_png_in_rgb_order(tmp_path):
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, 0, 0] = 255  # R -> channel 0
    rgb[0, 1, 2] = 255  # B -> channel 2
    path = write_png(tmp_path / "m.png", rgb)
    target, _ = load_mask((path,), MaskSpec("multilabel", ("r", "g", "b")))
    np.testing.assert_array_equal(target[0], [[1, 0, 0], [0, 0, 1]])


def test_instances_16_bit(tmp_path):
    raw = np.array([[0, 300], [65535, 300]], np.uint16)
    path = write_png(tmp_path / "i.png", raw)
    labels = decode_instances(read_raw(path), path)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [[0, 300], [65535, 300]])


def test_corrupt_png_is_refused(tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"m\.png: cannot read the mask"):
        load_mask((path,), MaskSpec("binary", ("x",), positive_values=(255,)))


@pytest.mark.parametrize(
    "array, spec",
    [
        (np.array([[0, 128, 255]], np.uint8), MaskSpec("binary", ("x",), positive_values=(255,))),
        (np.array([[0, 14]], np.uint8), MaskSpec("index", tuple("abcdefghijk"), ignore_index=11)),
        (np.zeros((2, 2, 3), np.uint8), MaskSpec("binary", ("x",), positive_values=(255,))),
        (np.array([[0, 3]], np.uint8), MaskSpec("multilabel", ("a", "b"))),
    ],
)
def test_strict_and_tolerant_decoding_say_the_same(tmp_path, array, spec):
    """One decoder: training's refusal is the audit's first problem, in the same words (the audit may add
    what it did about it, e.g. "; all equal: counted from the first")."""
    path = write_png(tmp_path / "m.png", array)
    with pytest.raises(DataError) as err:
        load_mask((path,), spec)
    problem = measure_mask((path,), spec).problems[0]
    assert f"{problem.file}: {problem.detail}".startswith(str(err.value))


@pytest.mark.parametrize(
    "dtype, high, shape",
    [(np.uint8, 256, (7, 13)), (np.uint8, 2, (30, 31)), (np.uint16, 65536, (9, 11)), (np.uint16, 40, (30, 30))],
)
def test_value_counts_equal_np_unique(dtype, high, shape):
    rng = np.random.default_rng(0)
    plane = rng.integers(0, high, shape).astype(dtype)
    values, counts = np.unique(plane, return_counts=True)
    expected = dict(zip(values.tolist(), counts.tolist(), strict=False))
    assert value_counts(plane) == expected
    assert value_counts(plane, two_valued_first=False) == expected


def test_value_counts_two_valued_fast_path():
    plane = np.zeros((4, 5), np.uint8)
    assert value_counts(plane) == {0: 20}
    plane[1, 1:4] = 255
    assert value_counts(plane) == {0: 17, 255: 3}
    assert value_counts(np.full((2, 2), 7, np.uint8)) == {7: 4}
    plane[0, 0] = 128  # three values: the histogram path
    assert value_counts(plane) == {0: 16, 128: 1, 255: 3}


def test_allowed_values_follow_the_decoders():
    assert allowed_values(MaskSpec("binary", ("x",), (0,))) == {0, 1, 255}
    assert allowed_values(MaskSpec("binary", ("x",), (7,))) == {0, 1, 7, 255}
    assert allowed_values(MaskSpec("index", ("a", "b", "c"), None, 11)) == {0, 1, 2, 11}
    assert allowed_values(MaskSpec("multilabel", ("a", "b"))) == {0, 1, 255}
