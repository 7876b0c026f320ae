"""Tests for seg/weighting/border.py: numbers worked out by hand, and the fast border term checked
against the independent naive reference (full-image scipy EDT per instance + sort).

The functions return the border term; the U-Net map is w_c + that term, and the tests that state
a map with a class weight w_c add it themselves."""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from seg.weighting import border
from seg.weighting.border import (
    border_radius,
    border_weight_map,
    connected_instances,
    naive_border_weight_map,
)

# ----------------------------------------------------------------------- border map by hand

# 3x7 image: instance 1 is column 0, instance 2 is the single pixel (0, 6).
THREE_BY_SEVEN = np.array(
    [
        [1, 0, 0, 0, 0, 0, 2],
        [1, 0, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
    ]
)


@pytest.mark.parametrize("border_map", [border_weight_map, naive_border_weight_map])
def test_border_map_by_hand(border_map):
    w = 1.0 + border_map(THREE_BY_SEVEN)  # w_c = 1; w0 = 10, sigma = 5: 2 sigma^2 = 50
    # (0, 3): d1 = 3 (to (0,0)), d2 = 3 (to (0,6)); 1 + 10 exp(-36/50) = 1 + 10 * 0.4867523
    assert w[0, 3] == pytest.approx(1 + 10 * math.exp(-0.72), abs=1e-6)
    assert w[0, 3] == pytest.approx(5.8675226, abs=1e-6)
    # (2, 3): d1 = 3 (to (2,0)), d2 = sqrt(2^2 + 3^2) = sqrt(13) = 3.6055513;
    # (3 + sqrt 13)^2 = 22 + 6 sqrt 13 = 43.633308; 1 + 10 exp(-43.633308/50) = 5.1783605
    assert w[2, 3] == pytest.approx(1 + 10 * math.exp(-((3 + math.sqrt(13)) ** 2) / 50), abs=1e-6)
    assert w[2, 3] == pytest.approx(5.1783605, abs=1e-6)
    # (1, 1): d1 = 1, d2 = sqrt(1^2 + 5^2) = sqrt(26); (1 + sqrt 26)^2 = 27 + 2 sqrt 26 = 37.198039
    assert w[1, 1] == pytest.approx(5.7522791, abs=1e-6)
    # inside the instances w = w_c
    assert w[THREE_BY_SEVEN > 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert w.dtype == np.float32 and w.shape == (3, 7)


@pytest.mark.parametrize("border_map", [border_weight_map, naive_border_weight_map])
def test_border_map_one_row_other_params(border_map):
    # 1x5 [1 0 0 0 2]: every gap pixel has d1 + d2 = 4; w0 = 4, sigma = 2: 2 sigma^2 = 8;
    # 0.5 + 4 exp(-16/8) = 0.5 + 4 * 0.1353353 = 1.0413411
    w = 0.5 + border_map(np.array([[1, 0, 0, 0, 2]]), w0=4.0, sigma=2.0)  # w_c = 0.5
    np.testing.assert_allclose(w, [[0.5, 1.0413411, 1.0413411, 1.0413411, 0.5]], atol=1e-6)


@pytest.mark.parametrize("border_map", [border_weight_map, naive_border_weight_map])
def test_border_map_below_two_instances_is_class_weight(border_map):
    # w_c + border term = w_c: the term is 0 everywhere
    rng = np.random.default_rng(0)
    w_c_map = rng.uniform(0.5, 3.0, (6, 9))
    empty = np.zeros((6, 9), np.int32)
    one = empty.copy()
    one[2:4, 3:5] = 7  # one instance: d2 = inf, border term 0
    for instances in (empty, one):
        np.testing.assert_array_equal(2.5 + border_map(instances), np.full((6, 9), 2.5, np.float32))
        np.testing.assert_array_equal((w_c_map + border_map(instances)).astype(np.float32), w_c_map.astype(np.float32))


def test_border_map_ids_need_not_be_consecutive():
    consecutive = THREE_BY_SEVEN
    expected = 1.0 + border_weight_map(consecutive)
    for ids, dtype in [((3, 17), np.uint16), ((5, 65535), np.uint16), ((2, 2**31 - 1), np.int32), ((9, 4), np.int64)]:
        relabelled = np.select([consecutive == 1, consecutive == 2], ids, 0).astype(dtype)
        np.testing.assert_array_equal(1.0 + border_weight_map(relabelled), expected)  # same computation: exact
        # the naive reference is another code path (scipy EDT vs cv2): equal to the stated 1e-5
        np.testing.assert_allclose(1.0 + naive_border_weight_map(relabelled), expected, rtol=0, atol=1e-5)


def test_border_map_refuses_bad_input():
    with pytest.raises(ValueError, match="integer"):
        border_weight_map(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        border_weight_map(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="shape"):
        border_weight_map(np.zeros((4, 4, 1), np.int32))  # not a [H,W] label image


def test_border_radius():
    # R = sigma sqrt(2 ln(w0/eps)) = 5 sqrt(2 ln 1e8) = 5 * 6.0697 = 30.349; the term at R is eps
    assert border_radius(10.0, 5.0, 1e-7) == pytest.approx(30.3485, abs=1e-4)
    assert 10.0 * math.exp(-(border_radius(10.0, 5.0, 1e-7) ** 2) / 50) == pytest.approx(1e-7)


# ------------------------------------------------------------------ fast vs naive, random images


def voronoi_labels(rng, size, n_cells):
    """[size,size] int64 Voronoi labels 1..n_cells from random seeds (cells touch)."""
    seeds = rng.choice(size * size, n_cells, replace=False)
    not_seed = np.ones(size * size, bool)
    not_seed[seeds] = False
    _, (rows, cols) = ndi.distance_transform_edt(not_seed.reshape(size, size), return_indices=True)
    labels = np.zeros(size * size, np.int64)
    labels[seeds] = np.arange(1, n_cells + 1)
    return labels.reshape(size, size)[rows, cols]


def membrane_gaps(labels):
    """Set to 0 the pixels with a 4-neighbour of another label (1-2 px background lines)."""
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return np.where(edge, 0, labels)


def random_ids(rng, labels, high):
    """Map labels 1..N to distinct random ids in [1, high); 0 stays 0."""
    ids = [0]
    while len(ids) <= labels.max():
        candidate = int(rng.integers(1, high))
        if candidate not in ids:
            ids.append(candidate)
    return np.array(ids)[labels]


@pytest.mark.parametrize("seed", range(5))
def test_fast_equals_naive_on_random_images(seed):
    rng = np.random.default_rng(seed)
    labels = voronoi_labels(rng, 96, int(rng.integers(2, 21)))
    gaps = membrane_gaps(labels)  # cells separated by thin background lines
    touching = np.where(labels % 3 == 0, 0, labels)  # some cells are background, the rest touch
    w_c_map = rng.uniform(0.5, 2.0, labels.shape)
    for image in (gaps, touching):
        for dtype, high in ((np.uint16, 2**16), (np.int32, 2**31 - 1)):
            instances = random_ids(rng, image, high).astype(dtype)
            for w0, sigma, w_c in ((10.0, 5.0, 1.0), (5.0, 3.0, w_c_map), (20.0, 8.0, 0.25)):
                fast = w_c + border_weight_map(instances, w0=w0, sigma=sigma)
                naive = w_c + naive_border_weight_map(instances, w0=w0, sigma=sigma)
                assert np.abs(fast - naive).max() <= 1e-5
    assert (1.0 + border_weight_map(gaps)).max() > 5.0  # the border term is exercised


def test_fast_equals_naive_far_apart_and_at_the_edges():
    # instances farther apart than R (term ~ 0) and touching the image border
    instances = np.zeros((40, 120), np.int32)
    instances[0, 0] = 1
    instances[39, 119] = 2
    instances[10:14, 50:53] = 3
    np.testing.assert_allclose(1.0 + border_weight_map(instances), 1.0 + naive_border_weight_map(instances), atol=1e-5)


# ------------------------------------------------------- the two passes of border_weight_map


@pytest.mark.parametrize("gap", [1, 2, 3, 4, 5, 8, 15, 22, 29, 30, 40])
def test_border_map_across_a_gap_by_hand(gap):
    # [1, 0 * gap, 2]: every gap pixel has d1 + d2 = gap + 1, term 10 exp(-(gap + 1)^2 / 50). Gaps of
    # <= 3 px are read off the offset scan, wider ones come from the per-instance crops; the term
    # must stay up to d1 + d2 = 30 <= R = 30.35 (gap 29: 10 exp(-18) = 1.5e-7 > eps = 1e-7) and may
    # be dropped past it (gap 30: 10 exp(-961/50) = 4.5e-8 < eps)
    row = np.array([[1] + [0] * gap + [2]], dtype=np.int32)
    term = 10 * math.exp(-((gap + 1) ** 2) / 50)
    for image in (row, row.T):  # along a row and along a column
        weight = border_weight_map(image).ravel()
        np.testing.assert_allclose(weight[1:-1], term, rtol=1e-6, atol=1e-7)
        assert weight[0] == weight[-1] == 0.0


def test_border_map_instances_on_the_image_border():
    # instances on every edge and in the corners, with thin and wide background between them
    instances = np.zeros((40, 50), np.int32)
    instances[0, :] = 1  # the whole top row
    instances[2:39, 0] = 2  # the left column, 1 px below instance 1
    instances[35:, 45:] = 3  # the bottom-right corner
    instances[10:20, 48:] = 4  # the right edge
    instances[39, 0] = 5  # the bottom-left corner pixel
    instances[18:22, 20:27] = 6  # a block in the middle
    instances[2, 2:48] = 7  # a line 1 px below instance 1
    np.testing.assert_allclose(border_weight_map(instances), naive_border_weight_map(instances), rtol=0, atol=1e-5)
    assert border_weight_map(instances)[1, 10] == pytest.approx(10 * math.exp(-4 / 50))  # d1 = d2 = 1


def test_border_map_one_instance_or_none_is_zero_even_at_the_image_border():
    one = np.zeros((30, 40), np.uint8)
    one[:, :3] = 9  # touches three edges
    one[10:20, 20:30] = 9  # the same instance, in two parts
    one[0, 35:] = 9  # and a third along the top edge
    everything = np.full((30, 40), 4, np.int64)  # no background
    for instances in (one, np.zeros((30, 40), np.int16), everything):
        weight = border_weight_map(instances)
        assert weight.dtype == np.float32 and weight.shape == (30, 40)
        np.testing.assert_array_equal(weight, 0.0)


def test_border_map_ids_beyond_float64_precision():
    # ids > 2**53 that float64 rounds alike (2**60 + 1, 2**60 + 2) are still two instances, in int64 and in
    # uint64 (whose ids np.union1d with a Python 0 used to turn into float64)
    expected = border_weight_map(THREE_BY_SEVEN)
    relabelled = np.select([THREE_BY_SEVEN == 1, THREE_BY_SEVEN == 2], [2**60 + 1, 2**60 + 2], 0).astype(np.int64)
    assert float(2**60 + 1) == float(2**60 + 2)
    np.testing.assert_array_equal(border_weight_map(relabelled), expected)
    np.testing.assert_array_equal(border_weight_map(relabelled.astype(np.uint64)), expected)


def test_border_map_thin_and_wide_background_in_one_image():
    # 1-2 px membranes (offset scan) with a 20 px wide empty band and an empty corner (crops), so that
    # some instances are cropped and their neighbours are not: both passes, and where they meet
    rng = np.random.default_rng(3)
    instances = membrane_gaps(voronoi_labels(rng, 96, 30))
    instances[40:60, :] = 0
    instances[:25, 70:] = 0
    near, margin = border._second_bounds(instances, instances == 0, 29)
    assert margin.any() and sum(len(pixels) for _, pixels in near) > 1000  # both passes run
    for w0, sigma in ((10.0, 5.0), (5.0, 3.0), (20.0, 8.0)):
        fast = border_weight_map(instances, w0=w0, sigma=sigma)
        np.testing.assert_allclose(fast, naive_border_weight_map(instances, w0=w0, sigma=sigma), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_second_bounds_hold_the_two_nearest_instances(seed):
    # What both passes rest on, against the naive distances: every background pixel with d2 <= cap is
    # either near, with d2**2 <= its scan radius2, or far, with margin >= floor(d2) (its two nearest
    # instances within that Chebyshev offset); near pixels and instances have margin 0
    rng = np.random.default_rng(seed)
    labels = voronoi_labels(rng, 80, int(rng.integers(5, 30)))
    thin = ndi.grey_erosion(labels, size=2) == labels  # 1-2 px gaps on the left
    thick = ndi.grey_erosion(labels, size=int(rng.integers(4, 13))) == labels  # wider ones on the right
    gaps = np.where(np.where(np.arange(80) < 40, thin, thick), labels, 0)
    gaps[: int(rng.integers(0, 30)), :] = 0  # and a wide empty band
    background = gaps == 0
    distances = np.sort([ndi.distance_transform_edt(gaps != i) for i in np.unique(gaps[gaps > 0])], axis=0)
    d2_squared = np.rint(distances[1] ** 2).astype(np.int64)
    checked = {"near": 0, "far": 0}
    for cap in (29, 12, 4):
        near, margin = border._second_bounds(gaps, background, cap)
        radius2 = np.zeros(gaps.shape, np.int64)
        for r2, pixels in near:
            radius2.ravel()[pixels] = r2
        scanned = radius2 > 0
        assert (d2_squared[scanned] <= radius2[scanned]).all()
        assert (margin[scanned] == 0).all() and (margin[~background] == 0).all()
        far = background & ~scanned & (d2_squared <= cap**2)
        assert (margin[far] >= np.floor(np.sqrt(d2_squared[far]) + 1e-9)).all()
        checked["near"] += int(scanned.sum())
        checked["far"] += int(far.sum())
    assert checked["near"] > 100 and checked["far"] > 100


def test_border_map_near_pixels_beside_an_instance_without_crop():
    # Near pixels are computed with the crops of their instances, or scanned when an instance up to
    # SCAN_PAD = 4 px away has no crop. The wide gap at the bottom right gives every instance a crop
    # but 10 (top left), which no far pixel needs; the near pixel (0, 7) has d1 = 2 (to 3) and d2 = 4
    # (to 10, 4 px to the left), where the crops alone give sqrt 18 (to 2). Found by a random search
    # over thin and wide gaps: scanning only within 3 px of an uncropped instance gets it wrong.
    instances = np.array(
        [
            [0, 10, 10, 10, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [13, 0, 8, 0, 3, 3, 3, 3, 0, 0, 0],
            [0, 0, 0, 0, 3, 3, 3, 3, 0, 0, 2],
            [6, 0, 4, 0, 0, 0, 0, 0, 0, 0, 2],
            [6, 0, 4, 4, 0, 0, 0, 0, 0, 0, 0],
            [6, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0],
            [0, 0, 11, 11, 0, 1, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_allclose(border_weight_map(instances), naive_border_weight_map(instances), rtol=0, atol=1e-5)


def test_border_map_scan_in_chunks_changes_nothing(monkeypatch):
    instances = membrane_gaps(voronoi_labels(np.random.default_rng(4), 64, 12))
    expected = border_weight_map(instances)
    monkeypatch.setattr(border, "SCAN_CHUNK", 7)  # pixels scanned 7 at a time
    np.testing.assert_array_equal(border_weight_map(instances), expected)


# ------------------------------------------------------------------------ connected instances


def test_connected_instances_four_vs_eight():
    diagonal = np.array(
        [
            [1, 0, 0],
            [0, 1, 0],
            [0, 0, 1],
        ],
        bool,
    )
    four = connected_instances(diagonal, connectivity=4)
    eight = connected_instances(diagonal, connectivity=8)
    assert four.dtype == np.int32
    np.testing.assert_array_equal(four, [[1, 0, 0], [0, 2, 0], [0, 0, 3]])
    np.testing.assert_array_equal(eight, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # ISBI: cells are the negative class of the membrane mask
    membrane = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    np.testing.assert_array_equal(connected_instances(~membrane), [[1, 0, 2], [0, 0, 0], [3, 0, 4]])


@pytest.mark.parametrize("connectivity", [0, 6, "4"])
def test_connected_instances_refuses_other_connectivity(connectivity):
    with pytest.raises(ValueError, match=repr(connectivity)):
        connected_instances(np.ones((2, 2), bool), connectivity=connectivity)
