"""Tests for seg/weighting/border.py: numbers worked out by hand, and the fast border term checked
against the independent naive reference (full-image scipy EDT per instance + sort).

The functions return the border term; the U-Net map is w_c + that term, and the tests that state
a map with a class weight w_c add it themselves."""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

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
