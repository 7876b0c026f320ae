"""Structure metrics of one image (seg.scoring.structure): numbers worked out by hand, agreement with
skimage's adapted_rand_error and variation_of_information, and with a naive object-matching loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from seg.scoring.structure import (
    AP_THRESHOLDS,
    OBJECTS_FROM,
    STRUCTURE_METRICS,
    contingency,
    entropies,
    image_structure,
    mean_structure,
    object_scores,
    predicted_objects,
    rand_vi,
    truth_objects,
)

RAND_VI_KEYS = ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge")

# ------------------------------------------------------------------ hand-made images


def three_objects() -> np.ndarray:
    """6x6: object 1 rows 0-1 cols 0-2 (6 px), object 2 rows 0-1 cols 3-5 (6 px), object 3 rows 4-5 (12 px)."""
    labels = np.zeros((6, 6), np.int32)
    labels[0:2, 0:3] = 1
    labels[0:2, 3:6] = 2
    labels[4:6, :] = 3
    return labels


def two_objects() -> np.ndarray:
    """6x6: object 1 rows 0-1 (12 px, objects 1 and 2 of three_objects joined), object 2 rows 4-5 (12 px)."""
    labels = np.zeros((6, 6), np.int32)
    labels[0:2, :] = 1
    labels[4:6, :] = 2
    return labels


def test_constants():
    assert STRUCTURE_METRICS == ("rand", "vi", "object_ap")
    assert OBJECTS_FROM == ("positive", "negative", "instance")
    assert AP_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_merge_by_hand():
    truth, pred = three_objects(), two_objects()
    scores = object_scores(truth, pred)
    # Pred 2 == truth 3 (IoU 1 at every threshold); pred 1 has IoU 6/12 = 0.5 with truths 1 and 2: no match.
    assert scores["merges"] == 1 and scores["splits"] == 0
    assert scores["objects_true"] == 3 and scores["objects_pred"] == 2
    assert scores["ap50"] == pytest.approx(1 / 4)  # TP 1, FP 1, FN 2: TP / (TP + FP + FN)
    assert scores["ap"] == pytest.approx(1 / 4)
    assert scores["precision50"] == pytest.approx(1 / 2)
    assert scores["recall50"] == pytest.approx(1 / 3)
    assert scores["f1_50"] == pytest.approx(2 / (2 + 1 + 2))
    rv = rand_vi(truth, pred)
    # Table (truth, pred): (1,1)=6, (2,1)=6, (3,2)=12. Pairs: both 36+36+144-24 = 192, truth 192, pred 264.
    assert rv["v_rand_split"] == 1.0
    assert rv["v_rand_merge"] == pytest.approx(192 / 264)
    assert rv["v_rand"] == pytest.approx(16 / 19)
    # H(T) = 1.5 bits, H(P) = 1 bit, H(T|P) = 0.5, H(P|T) = 0: split 1, merge 1 - 0.5 / 1.5.
    assert rv["v_info_split"] == 1.0
    assert rv["v_info_merge"] == pytest.approx(2 / 3)
    assert rv["v_info"] == pytest.approx(4 / 5)


def test_split_by_hand():
    truth, pred = two_objects(), three_objects()
    scores = object_scores(truth, pred)
    assert scores["splits"] == 1 and scores["merges"] == 0
    assert scores["ap50"] == pytest.approx(1 / 4)  # TP 1, FP 2, FN 1
    assert scores["precision50"] == pytest.approx(1 / 3)
    assert scores["recall50"] == pytest.approx(1 / 2)
    assert scores["f1_50"] == pytest.approx(2 / 5)
    rv = rand_vi(truth, pred)
    assert rv["v_rand_split"] == pytest.approx(192 / 264) and rv["v_rand_merge"] == 1.0
    assert rv["v_info_split"] == pytest.approx(2 / 3) and rv["v_info_merge"] == 1.0
    h = entropies(truth, pred)
    assert h["h_true"] == pytest.approx(1.0) and h["h_pred"] == pytest.approx(1.5)
    assert h["h_pred_given_true"] == pytest.approx(0.5) and h["h_true_given_pred"] == 0.0
    assert h["h_joint"] == pytest.approx(1.5) and h["mutual_info"] == pytest.approx(1.0)


def test_merge_of_two_without_any_match():
    truth = np.zeros((6, 6), np.int32)
    truth[1:5, 0:2], truth[1:5, 4:6] = 1, 2
    pred = np.zeros((6, 6), np.int32)
    pred[1:5, :] = 7  # 24 px: IoU 8/24 with each
    scores = object_scores(truth, pred)
    assert scores["merges"] == 1 and scores["splits"] == 0
    assert scores["ap50"] == 0.0 and scores["ap"] == 0.0 and scores["f1_50"] == 0.0
    assert scores["precision50"] == 0.0 and scores["recall50"] == 0.0


def test_perfect_prediction_scores_one():
    truth = three_objects()
    pred = np.where(truth > 0, truth + 10, 0)  # other label values, same objects
    rv, obj = rand_vi(truth, pred), object_scores(truth, pred)
    assert rv == {key: 1.0 for key in rv}
    assert obj["ap"] == 1.0 and obj["ap50"] == 1.0 and obj["f1_50"] == 1.0
    assert obj["merges"] == 0 and obj["splits"] == 0


def test_single_object_each_and_no_foreground():
    truth = np.zeros((4, 4), np.int32)
    truth[:2] = 1
    pred = np.ones((4, 4), np.int32)
    # H(T) = H(P) = I = 0 over the foreground: both information scores 1; Rand: one label each, all pairs agree.
    assert rand_vi(truth, pred) == dict.fromkeys(RAND_VI_KEYS, 1.0)
    empty = rand_vi(np.zeros((4, 4), np.int32), pred)
    assert len(empty) == 6 and all(math.isnan(v) for v in empty.values())


def test_single_pixel_objects_rand_convention():
    truth = np.array([[1, 2, 3, 4]])
    merged = rand_vi(truth, np.ones_like(truth))
    # No pair of pixels shares a truth label: split score 1 by convention, merge 0 (no predicted pair agrees).
    assert merged["v_rand_split"] == 1.0 and merged["v_rand_merge"] == 0.0 and merged["v_rand"] == 0.0
    # H(P) = 0: split 1; I = 0 < H(T): merge 0.
    assert merged["v_info_split"] == 1.0 and merged["v_info_merge"] == 0.0 and merged["v_info"] == 0.0


def test_object_scores_empty_images():
    zeros = np.zeros((5, 5), np.int32)
    one = zeros.copy()
    one[1:3, 1:3] = 4
    nothing = object_scores(zeros, zeros)
    assert all(math.isnan(nothing[k]) for k in ("ap", "ap50", "precision50", "recall50", "f1_50"))
    assert nothing["merges"] == nothing["splits"] == nothing["objects_true"] == nothing["objects_pred"] == 0
    missed = object_scores(one, zeros)
    assert missed["ap"] == 0.0 and missed["recall50"] == 0.0 and missed["f1_50"] == 0.0
    assert math.isnan(missed["precision50"]) and missed["objects_true"] == 1
    spurious = object_scores(zeros, one)
    assert spurious["ap"] == 0.0 and spurious["precision50"] == 0.0 and math.isnan(spurious["recall50"])


@pytest.mark.parametrize(
    ("truth_pixels", "pred_pixels", "ap50", "ap"),
    [
        (4, 2, 0.0, 0.0),  # IoU exactly 0.5: no match
        (100, 51, 1.0, 0.1),  # 0.51: matches at 0.5 only
        (20, 11, 1.0, 0.1),  # exactly 0.55: matches at 0.5, not at 0.55
        (20, 19, 1.0, 0.9),  # exactly 0.95: matches at 0.5 ... 0.9, not at 0.95
        (20, 20, 1.0, 1.0),
    ],
)
def test_iou_threshold_is_strict(truth_pixels, pred_pixels, ap50, ap):
    truth = np.zeros((1, 120), np.int32)
    truth[0, :truth_pixels] = 1
    pred = np.zeros_like(truth)
    pred[0, :pred_pixels] = 3  # inside the truth object: IoU = pred_pixels / truth_pixels
    scores = object_scores(truth, pred)
    assert scores["ap50"] == ap50
    assert scores["ap"] == pytest.approx(ap)


def test_iou_counts_pixels_on_background_of_the_other_image():
    truth = np.zeros((1, 10), np.int32)
    truth[0, 0:4] = 1
    pred = np.zeros_like(truth)
    pred[0, 0:6] = 2  # 4 shared, 2 on truth background: IoU 4/6
    assert object_scores(truth, pred)["ap"] == pytest.approx(4 / 10)  # matches at 0.5 ... 0.65


# ------------------------------------------------------------------ against skimage


def random_labels(rng: np.random.Generator, shape: tuple[int, int], n: int, block: int) -> np.ndarray:
    """Labels 0..n-1 on blocks of block x block pixels, plus single-pixel noise."""
    coarse = rng.integers(0, n, size=(shape[0] // block + 1, shape[1] // block + 1))
    labels = np.kron(coarse, np.ones((block, block), np.int64))[: shape[0], : shape[1]]
    noise = rng.random(shape) < 0.05
    labels[noise] = rng.integers(0, n, size=int(noise.sum()))
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_skimage(seed):
    rng = np.random.default_rng(seed)
    shape = (40 + seed, 50)
    truth = random_labels(rng, shape, 3 + seed, 1 + seed % 4)
    pred = random_labels(rng, shape, 2 + 2 * seed, 1 + (seed + 1) % 5)
    assert (truth == 0).any() and (pred == 0).any()
    rv, h = rand_vi(truth, pred), entropies(truth, pred)
    error, split, merge = adapted_rand_error(truth, pred, ignore_labels=(0,))
    assert rv["v_rand"] == pytest.approx(1 - error, abs=1e-9)
    assert rv["v_rand_split"] == pytest.approx(split, abs=1e-9)
    assert rv["v_rand_merge"] == pytest.approx(merge, abs=1e-9)
    pred_given_true, true_given_pred = variation_of_information(truth, pred, ignore_labels=(0,))
    assert h["h_pred_given_true"] == pytest.approx(pred_given_true, abs=1e-9)
    assert h["h_true_given_pred"] == pytest.approx(true_given_pred, abs=1e-9)
    assert h["h_joint"] - h["h_true"] == pytest.approx(pred_given_true, abs=1e-9)
    assert h["h_joint"] - h["h_pred"] == pytest.approx(true_given_pred, abs=1e-9)
    assert rv["v_info_split"] == pytest.approx(1 - pred_given_true / h["h_pred"], abs=1e-9)
    assert rv["v_info_merge"] == pytest.approx(1 - true_given_pred / h["h_true"], abs=1e-9)


@pytest.mark.parametrize(("truth", "pred"), [(three_objects(), two_objects()), (two_objects(), three_objects())])
def test_hand_made_agree_with_skimage(truth, pred):
    error, split, merge = adapted_rand_error(truth, pred, ignore_labels=(0,))
    rv = rand_vi(truth, pred)
    assert (rv["v_rand"], rv["v_rand_split"], rv["v_rand_merge"]) == pytest.approx((1 - error, split, merge), abs=1e-9)
    h = entropies(truth, pred)
    vi = variation_of_information(truth, pred, ignore_labels=(0,))
    assert (h["h_pred_given_true"], h["h_true_given_pred"]) == pytest.approx(tuple(vi), abs=1e-9)


def test_contingency_triplets():
    a = np.array([[5, 5, 0], [2, 2, 2]])
    b = np.array([[1, 0, 0], [1, 1, 9]])
    t, p, n = contingency(a, b)
    assert list(zip(t.tolist(), p.tolist(), n.tolist(), strict=True)) == [
        (0, 0, 1),
        (2, 1, 2),
        (2, 9, 1),
        (5, 0, 1),
        (5, 1, 1),
    ]


# --------------------------------------------------------------- naive object matching


def naive_object_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    truth_ids = [k for k in np.unique(truth) if k > 0]
    pred_ids = [k for k in np.unique(pred) if k > 0]
    iou = np.zeros((len(truth_ids), len(pred_ids)))
    merged_into = np.zeros((len(truth_ids), len(pred_ids)), bool)  # truth i mostly inside pred j
    split_into = np.zeros((len(truth_ids), len(pred_ids)), bool)  # pred j mostly inside truth i
    for i, t in enumerate(truth_ids):
        for j, p in enumerate(pred_ids):
            mask_t, mask_p = truth == t, pred == p
            inter = (mask_t & mask_p).sum()
            iou[i, j] = inter / (mask_t | mask_p).sum()
            merged_into[i, j] = inter > mask_t.sum() / 2
            split_into[i, j] = inter > mask_p.sum() / 2
    per_threshold = []
    for threshold in AP_THRESHOLDS:
        tp = int((iou > threshold).sum())
        per_threshold.append(tp / (len(truth_ids) + len(pred_ids) - tp))
    return {
        "ap": float(np.mean(per_threshold)),
        "ap50": per_threshold[0],
        "merges": float((merged_into.sum(axis=0) >= 2).sum()),
        "splits": float((split_into.sum(axis=1) >= 2).sum()),
        "objects_true": float(len(truth_ids)),
        "objects_pred": float(len(pred_ids)),
    }


@pytest.mark.parametrize("seed", range(5))
def test_object_scores_agree_with_naive_loop(seed):
    rng = np.random.default_rng(100 + seed)
    blobs = rng.random((32, 32)) < 0.45
    truth = truth_objects(blobs, None, "positive")
    noisy = blobs ^ (rng.random(blobs.shape) < 0.08)
    pred = predicted_objects(noisy, None, "positive")
    scores, naive = object_scores(truth, pred), naive_object_scores(truth, pred)
    assert naive["objects_true"] >= 50 and naive["merges"] > 0 and naive["splits"] > 0
    for key, value in naive.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key
    # Coarse labels (not necessarily connected), merged by a random map and split by a vertical cut.
    truth = random_labels(rng, (24, 24), 8, 4)
    pred = rng.integers(0, 5, size=8)[truth]
    pred[:, 10:] += 10 * (pred[:, 10:] > 0)
    scores, naive = object_scores(truth, pred), naive_object_scores(truth, pred)
    for key, value in naive.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key


# ------------------------------------------------------------ objects from membranes


def membrane(gap_row: int | None = None, width: int = 1) -> np.ndarray:
    """7x7 bool: a vertical membrane at column 3 (and up to 3 + width - 1); a gap at gap_row."""
    mask = np.zeros((7, 7), bool)
    mask[:, 3 : 3 + width] = True
    if gap_row is not None:
        mask[gap_row, :] = False
    return mask


def test_truth_objects_negative_are_cells():
    labels = truth_objects(membrane(), None, "negative")
    assert labels.dtype == np.int32
    assert (labels[:, :3] == 1).all() and (labels[:, 4:] == 2).all() and (labels[:, 3] == 0).all()
    positive = truth_objects(membrane(), None, "positive")
    assert (positive[:, 3] == 1).all() and positive.sum() == 7


def test_membrane_gap_merges_cells():
    truth = truth_objects(membrane(), None, "negative")
    pred = predicted_objects(membrane(gap_row=3), None, "negative")
    assert (pred == 1).all()  # one region, predicted membrane pixels filled in
    scores = rand_vi(truth, pred)
    # 21 + 21 foreground pixels all in one predicted object: split 1, merge (2*21*20) / (42*41) = 20/41.
    assert scores["v_rand_split"] == 1.0
    assert scores["v_rand_merge"] == pytest.approx(20 / 41)
    assert scores["v_rand"] == pytest.approx(40 / 61)
    assert scores["v_rand"] < 1
    obj = image_structure(membrane(), membrane(gap_row=3), None, ["object_ap"], "negative")
    assert obj["merges"] == 1 and obj["objects_pred"] == 1 and obj["objects_true"] == 2


def test_thick_predicted_membrane_goes_to_nearest_cell():
    pred = predicted_objects(membrane(width=2), None, "negative")  # predicted membrane at columns 3 and 4
    # Column 3 is 1 px from the left cell (column 2) and 2 px from the right one (column 5): left; column 4: right.
    assert (pred[:, :4] == 1).all() and (pred[:, 4:] == 2).all()
    truth = truth_objects(membrane(), None, "negative")
    assert rand_vi(truth, pred)["v_rand"] == 1.0  # the truth membrane (column 3) is ignored
    scores = image_structure(membrane(), membrane(width=2), None, ["rand", "vi"], "negative")
    assert scores == dict.fromkeys(RAND_VI_KEYS, 1.0)


def test_connectivity_on_a_diagonal():
    diagonal = np.eye(5, dtype=bool)
    assert truth_objects(diagonal, None, "negative", connectivity=4).max() == 2  # above and below the diagonal
    assert truth_objects(diagonal, None, "negative", connectivity=8).max() == 1  # (0,1) touches (1,0)
    assert predicted_objects(diagonal, None, "positive", connectivity=4).max() == 5
    assert predicted_objects(diagonal, None, "positive", connectivity=8).max() == 1
    with pytest.raises(ValueError, match="connectivity"):
        predicted_objects(diagonal, None, "positive", connectivity=6)


def test_invalid_pixels_and_instances():
    valid = np.ones((7, 7), bool)
    valid[0, :] = False
    truth = truth_objects(membrane(), valid, "negative")
    pred = predicted_objects(membrane(gap_row=3), valid, "negative")
    assert (truth[0] == 0).all() and (pred[0] == 0).all() and (pred[1:] == 1).all()
    instances = np.arange(49).reshape(7, 7)
    labels = truth_objects(membrane(), valid, "instance", instances=instances)
    assert labels.dtype == np.int32 and (labels[0] == 0).all() and (labels[1:] == instances[1:]).all()
    assert (predicted_objects(membrane(), None, "instance") == truth_objects(membrane(), None, "positive")).all()
    with pytest.raises(ValueError, match="instance"):
        truth_objects(membrane(), None, "instance")


def test_all_boundary_prediction_has_no_objects():
    assert (predicted_objects(np.ones((4, 4), bool), None, "negative") == 0).all()


# ---------------------------------------------------------------- image and mean


def test_image_structure_keys_and_errors():
    truth, pred = membrane(), membrane(gap_row=3)
    scores = image_structure(truth, pred, None, ["rand", "vi", "object_ap"], "negative")
    assert list(scores) == [
        "v_rand",
        "v_rand_split",
        "v_rand_merge",
        "v_info",
        "v_info_split",
        "v_info_merge",
        "ap",
        "ap50",
        "precision50",
        "recall50",
        "f1_50",
        "merges",
        "splits",
        "objects_true",
        "objects_pred",
    ]
    assert all(type(v) is float for v in scores.values())
    assert list(image_structure(truth, pred, None, ["vi"], "negative")) == ["v_info", "v_info_split", "v_info_merge"]
    assert image_structure(truth, pred, None, [], "negative") == {}
    with pytest.raises(ValueError, match="metric"):
        image_structure(truth, pred, None, ["dice"], "negative")
    with pytest.raises(ValueError, match="objects_from"):
        image_structure(truth, pred, None, ["rand"], "cells")
    with pytest.raises(ValueError, match="pred"):
        image_structure(truth, pred[:5], None, ["rand"], "negative")


def test_mean_structure():
    nan = float("nan")
    means = mean_structure([{"ap": 0.5, "v_rand": nan, "x": nan}, {"ap": 1.0, "v_rand": 0.25, "x": nan}])
    assert means == {"ap": 0.75, "v_rand": 0.25, "x": None}
    assert mean_structure([]) == {}


def test_object_ap_of_cells_compares_regions_without_their_membrane():
    """Two 10x10 cells of a 10x22 image separated by a 2-pixel membrane, predicted exactly: the true cells
    exclude the membrane, so the predicted cells must too (expanded, each would take a membrane column and
    its IoU would drop to 100/110); V_rand scores the expanded partition and is 1 as well."""
    truth = np.zeros((10, 22), bool)
    truth[:, 10:12] = True  # membrane: the positive class
    scores = image_structure(truth, truth.copy(), None, ["rand", "object_ap"], "negative")
    assert scores["ap"] == 1.0 and scores["v_rand"] == 1.0
    expanded = predicted_objects(truth, None, "negative")
    assert object_scores(truth_objects(truth, None, "negative"), expanded)["ap"] < 1.0
