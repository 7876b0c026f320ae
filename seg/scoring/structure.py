"""Structure metrics of one image: how well a binary prediction separates touching objects.

numpy on the CPU, off the training hot path. Objects are integer label images (0 = no object):

- :func:`truth_objects` / :func:`predicted_objects` turn a binary mask into objects, taken from
  ``objects_from``: ``positive`` (components of the positive class: nuclei), ``negative`` (the regions the
  positive class separates: ISBI 2012 cells enclosed by membrane) or ``instance`` (given instance labels
  for the truth; components of the prediction).
- :func:`rand_vi`: the foreground-restricted V_rand and V_info of the ISBI 2012 challenge
  (Arganda-Carreras et al. 2015, Front. Neuroanat. 9:142), with their split and merge scores.
- :func:`object_scores`: object-level average precision over IoU thresholds (the DSB2018 definition),
  with counts of merged and split objects.
- :func:`image_structure` computes the metrics named in the config key ``metrics.structure`` for one image
  and channel; :func:`mean_structure` averages them over images.

Split scores fall below 1 when the prediction cuts a true object into pieces (over-segmentation); merge
scores fall below 1 when it joins true objects (under-segmentation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from skimage.segmentation import expand_labels

STRUCTURE_METRICS = ("rand", "vi", "object_ap")
OBJECTS_FROM = ("positive", "negative", "instance")
AP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
CONNECTIVITIES = (4, 8)

RAND_KEYS = ("v_rand", "v_rand_split", "v_rand_merge")
VI_KEYS = ("v_info", "v_info_split", "v_info_merge")
OBJECT_KEYS = (
    "ap",
    "ap50",
    "precision50",
    "recall50",
    "f1_50",
    "merges",
    "splits",
    "objects_true",
    "objects_pred",
)

NAN = float("nan")


# ------------------------------------------------------------------------- objects


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_mask(mask: np.ndarray, shape: tuple[int, ...] | None, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or (shape is not None and mask.shape != shape):
        expected = "[H,W]" if shape is None else f"{shape}"
        raise ValueError(f"{name} must be {expected}; got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def components(mask: np.ndarray, connectivity: int = 4) -> np.ndarray:
    """int32 labels 1..n of the connected components of a bool [H,W] mask (0 outside it), in
    cv2.connectedComponents' order (row-major scan of each component's first pixel)."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}")
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
    return labels.astype(np.int32, copy=False)


def truth_objects(
    truth: np.ndarray,
    valid: np.ndarray | None,
    objects_from: str,
    connectivity: int = 4,
    instances: np.ndarray | None = None,
) -> np.ndarray:
    """int32 label image [H,W] of the ground-truth objects (0 = no object or ignored).

    truth: bool [H,W], the positive class; valid: bool [H,W] or None (False pixels get 0).

    - ``positive``: connected components of ``truth & valid``;
    - ``negative``: connected components of ``~truth & valid``, the regions the positive class separates
      (ISBI cells); positive (membrane) pixels get 0 and are ignored by :func:`rand_vi`;
    - ``instance``: ``instances`` (int labels, 0 = background) as given, cast to int32; must be passed.
    """
    _check_choice(objects_from, OBJECTS_FROM, "objects_from")
    truth = _check_mask(truth, None, "truth")
    keep = np.ones(truth.shape, bool) if valid is None else _check_mask(valid, truth.shape, "valid")
    if objects_from == "instance":
        if instances is None:
            raise ValueError("objects_from='instance' needs the instance labels (instances=None)")
        instances = np.asarray(instances)
        if instances.shape != truth.shape:
            raise ValueError(f"instances must be {truth.shape}; got shape {instances.shape}")
        return np.where(keep, instances, 0).astype(np.int32)
    region = truth if objects_from == "positive" else ~truth
    return components(region & keep, connectivity)


def predicted_objects(
    pred: np.ndarray, valid: np.ndarray | None, objects_from: str, connectivity: int = 4, expand: bool = True
) -> np.ndarray:
    """int32 label image [H,W] of the objects of a binary prediction (0 = no object).

    pred: bool [H,W]; valid: bool [H,W] or None (False pixels get 0).

    - ``positive`` / ``instance``: connected components of ``pred & valid``;
    - ``negative``: connected components of ``~pred & valid``; then every other pixel (predicted boundary)
      goes to the nearest region (Euclidean, skimage.segmentation.expand_labels with a distance that fills
      the image), so the prediction is a full partition of the image, as the ISBI 2012 challenge scores it.
      The boundary is not thinned first (the challenge's script thins it), so thick predicted boundaries
      are split between the cells on either side. If nothing is predicted negative every pixel gets 0.
      With ``expand=False`` the regions are left as they are (boundary pixels 0): the objects compared
      with the true cells, which exclude the membrane too, by object AP.

    Invalid pixels get 0 at the end.
    """
    _check_choice(objects_from, OBJECTS_FROM, "objects_from")
    pred = _check_mask(pred, None, "pred")
    keep = np.ones(pred.shape, bool) if valid is None else _check_mask(valid, pred.shape, "valid")
    if objects_from != "negative":
        return components(pred & keep, connectivity)
    cells = components(~pred & keep, connectivity)
    if cells.any() and expand:
        cells = expand_labels(cells, distance=sum(cells.shape) + 1)
    return np.where(keep, cells, 0).astype(np.int32)


# ---------------------------------------------------------------- contingency table


def contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nonzero cells of the contingency table of two label images of one shape, as triplets:
    (label in a, label in b, pixel count), int64 arrays sorted by (a, b)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.size != b.size:
        raise ValueError(f"label images differ in size: {a.size} and {b.size}")
    a_ids, a_index = np.unique(a, return_inverse=True)
    b_ids, b_index = np.unique(b, return_inverse=True)
    pairs, counts = np.unique(a_index.astype(np.int64) * len(b_ids) + b_index, return_counts=True)
    return a_ids[pairs // len(b_ids)].astype(np.int64), b_ids[pairs % len(b_ids)].astype(np.int64), counts


def _check_labels(truth_labels: np.ndarray, pred_labels: np.ndarray) -> None:
    if np.shape(truth_labels) != np.shape(pred_labels):
        raise ValueError(f"label images differ in shape: {np.shape(truth_labels)} and {np.shape(pred_labels)}")


def _foreground_table(truth_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency triplets over the pixels where truth_labels > 0 (prediction label 0 is an ordinary label)."""
    _check_labels(truth_labels, pred_labels)
    foreground = np.asarray(truth_labels) > 0
    return contingency(np.asarray(truth_labels)[foreground], np.asarray(pred_labels)[foreground])


def _marginal(labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of counts per distinct label (float64)."""
    _, index = np.unique(labels, return_inverse=True)
    return np.bincount(index, weights=counts.astype(np.float64))


# -------------------------------------------------------------------- rand and VI


def _entropy_bits(probabilities: np.ndarray) -> float:
    """-sum p log2 p over p > 0."""
    p = probabilities[probabilities > 0]
    return float(-(p * np.log2(p)).sum())


def _table_entropies(t: np.ndarray, p: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    keys = ("h_true", "h_pred", "h_joint", "h_pred_given_true", "h_true_given_pred", "mutual_info")
    total = counts.sum()
    if total == 0:
        return dict.fromkeys(keys, NAN)
    joint = counts / total
    _, t_index = np.unique(t, return_inverse=True)
    _, p_index = np.unique(p, return_inverse=True)
    p_t = np.bincount(t_index, weights=joint)
    p_p = np.bincount(p_index, weights=joint)
    h_true = _entropy_bits(p_t)
    h_true_given_pred = float(-(joint * np.log2(joint / p_p[p_index])).sum())
    return {
        "h_true": h_true,
        "h_pred": _entropy_bits(p_p),
        "h_joint": _entropy_bits(joint),
        "h_pred_given_true": float(-(joint * np.log2(joint / p_t[t_index])).sum()),
        "h_true_given_pred": h_true_given_pred,
        "mutual_info": h_true - h_true_given_pred,
    }


def entropies(truth_labels: np.ndarray, pred_labels: np.ndarray) -> dict[str, float]:
    """Entropies in bits of the foreground-restricted joint distribution of labels (pixels where
    truth_labels > 0, prediction label 0 counted as an ordinary label):

    h_true = H(T), h_pred = H(P), h_joint = H(T,P), h_pred_given_true = H(P|T) = H(T,P) - H(T) (the split
    part of the variation of information), h_true_given_pred = H(T|P) = H(T,P) - H(P) (the merge part),
    mutual_info = I(T;P) = H(T) - H(T|P). The conditional entropies are summed cell by cell,
    -sum p_tp log2(p_tp / p_t), so they are exactly 0 when one labelling determines the other.
    NaN for everything when there is no foreground pixel.
    """
    return _table_entropies(*_foreground_table(truth_labels, pred_labels))


def _fscore(split: float, merge: float) -> float:
    """Harmonic mean 2sm / (s + m); 0 when both are 0, NaN when either is NaN."""
    if math.isnan(split) or math.isnan(merge):
        return NAN
    return 0.0 if split + merge == 0 else 2 * split * merge / (split + merge)


def _rand_scores(t: np.ndarray, p: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    if counts.sum() == 0:
        return dict.fromkeys(RAND_KEYS, NAN)
    n = counts.astype(np.float64)
    t_sizes, p_sizes = _marginal(t, counts), _marginal(p, counts)
    # Ordered pairs of distinct pixels with the same label: sum n (n - 1), as skimage counts them.
    same_both = float(n @ n - n.sum())
    same_true = float(t_sizes @ t_sizes - t_sizes.sum())
    same_pred = float(p_sizes @ p_sizes - p_sizes.sum())
    split = same_both / same_true if same_true > 0 else 1.0
    merge = same_both / same_pred if same_pred > 0 else 1.0
    return {"v_rand": _fscore(split, merge), "v_rand_split": split, "v_rand_merge": merge}


def _info_scores(t: np.ndarray, p: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    h = _table_entropies(t, p, counts)
    if math.isnan(h["h_true"]):
        return dict.fromkeys(VI_KEYS, NAN)
    split = 1.0 - h["h_pred_given_true"] / h["h_pred"] if h["h_pred"] > 0 else 1.0
    merge = 1.0 - h["h_true_given_pred"] / h["h_true"] if h["h_true"] > 0 else 1.0
    split, merge = min(max(split, 0.0), 1.0), min(max(merge, 0.0), 1.0)
    return {"v_info": _fscore(split, merge), "v_info_split": split, "v_info_merge": merge}


def rand_vi(truth_labels: np.ndarray, pred_labels: np.ndarray) -> dict[str, float]:
    """Foreground-restricted V_rand and V_info of the ISBI 2012 challenge, over the pixels where
    truth_labels > 0; a prediction label 0 there counts as one more predicted object.

    Rand (pairs of distinct pixels, as skimage.metrics.adapted_rand_error counts them):
    ``v_rand_split`` = pairs with the same label in truth and prediction / pairs with the same truth label
    (falls when true objects are split), ``v_rand_merge`` = the same / pairs with the same predicted label
    (falls when they are merged), ``v_rand`` = their harmonic mean = 1 - adapted Rand error.
    skimage's adapted_rand_error returns (error, split, merge) in this order; its docstring calls them
    precision and recall with the definitions the other way round, but the code divides as here.

    Information: with H(T), H(P) the entropies of the truth and predicted labels, I their mutual information,
    ``v_info_split`` = I / H(P) = 1 - H(P|T) / H(P), ``v_info_merge`` = I / H(T) = 1 - H(T|P) / H(T),
    ``v_info`` = their harmonic mean (base of the log is irrelevant; see :func:`entropies`).

    Edge cases: a split score is 1.0 where its denominator is 0 (no pairs of pixels share a truth label /
    H(P) = 0: a single predicted object, then I = 0 too), likewise a merge score; a score pair (0, 0) has
    F-score 0; no foreground pixel at all -> NaN for all six.
    """
    t, p, counts = _foreground_table(truth_labels, pred_labels)
    return {**_rand_scores(t, p, counts), **_info_scores(t, p, counts)}


# ------------------------------------------------------------------ object scores


def _threshold_percent(threshold: float) -> int:
    return round(threshold * 100)


def _count_per_label(labels: np.ndarray, minimum: int) -> int:
    """The number of distinct values that occur at least `minimum` times in labels."""
    _, counts = np.unique(labels, return_counts=True)
    return int((counts >= minimum).sum())


def object_scores(truth_labels: np.ndarray, pred_labels: np.ndarray) -> dict[str, float]:
    """Object-level scores, the DSB2018 definition. Objects are the labels > 0 of each image (0 is
    background, not an object); an object's area is all its pixels, including those on 0 in the other image.

    IoU(T, P) = |T & P| / |T | P| from the contingency table. At a threshold t a pair matches when
    IoU > t (strictly; compared in integers, so IoU exactly t does not match); for t >= 0.5 each object
    matches at most one other. TP(t) = matched pairs, FP(t) = unmatched predicted objects,
    FN(t) = unmatched true objects.

    ``ap`` = mean over AP_THRESHOLDS of TP / (TP + FP + FN); ``ap50`` the same at t = 0.5;
    ``precision50`` = TP / (TP + FP), ``recall50`` = TP / (TP + FN), ``f1_50`` = 2TP / (2TP + FP + FN) at 0.5;
    ``merges`` = predicted objects holding more than half the pixels of at least two true objects;
    ``splits`` = true objects holding more than half the pixels of at least two predicted objects;
    ``objects_true``, ``objects_pred``: the numbers of objects.

    Edge cases: no object in either image -> ap, ap50, precision50, recall50, f1_50 NaN (undefined);
    no predicted object -> precision50 NaN (ap, ap50, recall50, f1_50 are 0 if there are true objects);
    no true object -> recall50 NaN (ap, ap50, precision50, f1_50 are 0 if there are predicted objects).
    """
    _check_labels(truth_labels, pred_labels)
    truth_ids, truth_sizes = np.unique(np.asarray(truth_labels), return_counts=True)
    pred_ids, pred_sizes = np.unique(np.asarray(pred_labels), return_counts=True)
    n_true, n_pred = int((truth_ids > 0).sum()), int((pred_ids > 0).sum())

    t, p, inter = contingency(truth_labels, pred_labels)
    both = (t > 0) & (p > 0)
    t, p, inter = t[both], p[both], inter[both]
    area_t = truth_sizes[np.searchsorted(truth_ids, t)].astype(np.int64)
    area_p = pred_sizes[np.searchsorted(pred_ids, p)].astype(np.int64)
    union = area_t + area_p - inter

    counts = {
        "merges": float(_count_per_label(p[2 * inter > area_t], 2)),
        "splits": float(_count_per_label(t[2 * inter > area_p], 2)),
        "objects_true": float(n_true),
        "objects_pred": float(n_pred),
    }
    if n_true + n_pred == 0:
        return {**dict.fromkeys(("ap", "ap50", "precision50", "recall50", "f1_50"), NAN), **counts}

    def matches(threshold: float) -> int:
        return int((100 * inter > _threshold_percent(threshold) * union).sum())

    precisions = []
    for threshold in AP_THRESHOLDS:
        tp = matches(threshold)
        precisions.append(tp / (n_true + n_pred - tp))  # TP + FP + FN
    tp50 = matches(0.5)
    return {
        "ap": float(np.mean(precisions)),
        "ap50": tp50 / (n_true + n_pred - tp50),
        "precision50": tp50 / n_pred if n_pred else NAN,
        "recall50": tp50 / n_true if n_true else NAN,
        "f1_50": 2 * tp50 / (n_true + n_pred),
        **counts,
    }


# ---------------------------------------------------------------------- per image


def image_structure(
    truth: np.ndarray,
    pred: np.ndarray,
    valid: np.ndarray | None,
    metrics: Sequence[str],
    objects_from: str,
    connectivity: int = 4,
    instances: np.ndarray | None = None,
) -> dict[str, float]:
    """All requested metrics of one image and channel, as plain floats (NaN where undefined):

    ``rand`` -> v_rand, v_rand_split, v_rand_merge; ``vi`` -> v_info, v_info_split, v_info_merge
    (:func:`rand_vi`); ``object_ap`` -> ap, ap50, precision50, recall50, f1_50, merges, splits,
    objects_true, objects_pred (:func:`object_scores`). Objects from :func:`truth_objects` and
    :func:`predicted_objects`: for ``negative``, V_rand and V_info score the prediction as a partition
    (boundary pixels given to the nearest cell; the truth's boundary is ignored), object AP compares the
    predicted regions as they are with the true cells (both without boundary pixels). Unknown metric or
    objects_from -> ValueError.
    """
    for name in metrics:
        _check_choice(name, STRUCTURE_METRICS, "metric")
    _check_choice(objects_from, OBJECTS_FROM, "objects_from")
    truth = _check_mask(truth, None, "truth")
    pred = _check_mask(pred, truth.shape, "pred")
    if not metrics:
        return {}
    truth_labels = truth_objects(truth, valid, objects_from, connectivity, instances)
    pred_labels = predicted_objects(pred, valid, objects_from, connectivity)
    result: dict[str, float] = {}
    if "rand" in metrics or "vi" in metrics:
        scores = rand_vi(truth_labels, pred_labels)
        for name, keys in (("rand", RAND_KEYS), ("vi", VI_KEYS)):
            if name in metrics:
                result.update({key: float(scores[key]) for key in keys})
    if "object_ap" in metrics:  # objects as the truth's: regions of the negative class are not expanded
        if objects_from == "negative":
            pred_labels = predicted_objects(pred, valid, objects_from, connectivity, expand=False)
        result.update({key: float(value) for key, value in object_scores(truth_labels, pred_labels).items()})
    return result


def mean_structure(per_image: list[dict[str, float]]) -> dict[str, float | None]:
    """Mean over images of each key (keys in order of first appearance), NaN values left out;
    None where no image has a value (JSON null)."""
    values: dict[str, list[float]] = {}
    for scores in per_image:
        for key, value in scores.items():
            values.setdefault(key, [])
            if value is not None and not math.isnan(value):
                values[key].append(float(value))
    return {key: (float(np.mean(found)) if found else None) for key, found in values.items()}
