"""The U-Net border term (Ronneberger et al. 2015, eq. 2) from instance label images.

The U-Net weight map is ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))``
with d1, d2 the Euclidean distances from pixel x to the nearest and the second-nearest
instance. As in the official implementation, the border term applies only to pixels outside
every instance. The functions here return the border term only: the class weight w_c is
added per batch (:func:`seg.weighting.maps.class_weight_map`). ``border_weight_map`` is the
fast version (per-instance crops, see its docstring); ``naive_border_weight_map`` is the
obviously-correct reference used by the tests and the benchmark.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import scipy.ndimage as ndi


def border_radius(w0: float, sigma: float, eps: float) -> float:
    """Distance R beyond which the border term is below ``eps``.

    w0 * exp(-R**2 / (2 sigma**2)) = eps  =>  R = sigma * sqrt(2 ln(w0 / eps)).
    Since d2 >= d1, d1 + d2 > R as soon as d2 > R, so only distances <= R matter.
    Returns 0 when w0 <= eps (the term never reaches eps).
    """
    if w0 <= eps:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / eps))


def _check_instances(instances: np.ndarray) -> np.ndarray:
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(f"instances must be a [H,W] label image, got shape {instances.shape}")
    if not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"instances must have an integer dtype, got {instances.dtype}")
    if instances.size and instances.min() < 0:
        raise ValueError("instances must be >= 0 (0 = background, > 0 = instance ids)")
    return instances


def _instance_boxes(instances: np.ndarray) -> list[tuple[int, tuple[slice, slice]]]:
    """(id, bounding-box slices) for every instance id present, ids in increasing order.

    Ids are relabelled consecutively first when they are sparse (e.g. a few ids near 2**31),
    so the cost stays O(pixels) whatever the id values.
    """
    max_id = int(instances.max()) if instances.size else 0
    if max_id == 0:
        return []
    if max_id <= max(instances.size, 1 << 16):
        labels, ids = instances, None
    else:
        ids = np.union1d([0], instances)  # sorted, ids[0] == 0
        labels = np.searchsorted(ids, instances)  # 0 -> 0, ids[k] -> k
    boxes = []
    for index, box in enumerate(ndi.find_objects(labels)):
        if box is not None:
            boxes.append((index + 1 if ids is None else int(ids[index + 1]), box))
    return boxes


def border_weight_map(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    eps: float = 1e-7,
) -> np.ndarray:
    """The U-Net border term, computed on per-instance crops.

    Args:
        instances: int label image [H,W], any integer dtype; 0 = background, every other
            value is one instance (ids may be non-consecutive).
        w0, sigma: the border term's height and width (paper: 10 and 5 px).
        eps: accuracy of the truncation: distances are computed only within
            R = sigma * sqrt(2 ln(w0 / eps)) of each instance, beyond which the term < eps.

    Returns:
        float32 [H,W]: w0 * exp(-(d1 + d2)**2 / (2 sigma**2)) on background pixels
        (instances == 0), 0 inside instances. With fewer than 2 instances d2 = inf and the
        term is 0 everywhere. The U-Net map is w_c plus this.

    For each instance, the distance to it is taken with cv2.distanceTransform (exact L2,
    DIST_MASK_PRECISE) inside its bounding box enlarged by ceil(R), and the two smallest
    distances per pixel are kept as a running pair (no [N,H,W] stack). cv2 returns float32
    distances; since exact squared distances are integers, d = sqrt(rint(d**2)) restores
    them exactly (float64) before the exponential. Where d2 = inf (fewer than 2 instances
    within reach) the term is exp(-inf) = 0.
    """
    instances = _check_instances(instances)
    height, width = instances.shape
    margin = int(math.ceil(border_radius(w0, sigma, eps)))
    d1 = np.full(instances.shape, np.inf, dtype=np.float32)
    d2 = np.full(instances.shape, np.inf, dtype=np.float32)
    for label, (rows, cols) in _instance_boxes(instances):
        crop = (
            slice(max(rows.start - margin, 0), min(rows.stop + margin, height)),
            slice(max(cols.start - margin, 0), min(cols.stop + margin, width)),
        )
        outside = (instances[crop] != label).view(np.uint8)  # distance to the nearest 0 = to the instance
        dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        d1_crop, d2_crop = d1[crop], d2[crop]  # views: updated in place
        np.minimum(d2_crop, np.maximum(d1_crop, dist), out=d2_crop)
        np.minimum(d1_crop, dist, out=d1_crop)
    background = instances == 0
    d1_exact = np.sqrt(np.rint(np.square(d1[background], dtype=np.float64)))
    d2_exact = np.sqrt(np.rint(np.square(d2[background], dtype=np.float64)))
    weight = np.zeros(instances.shape, dtype=np.float64)
    weight[background] = w0 * np.exp(-np.square(d1_exact + d2_exact) / (2.0 * sigma * sigma))
    return weight.astype(np.float32)


def naive_border_weight_map(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
) -> np.ndarray:
    """Reference border term: one full-image scipy EDT per instance, stacked and sorted.

    Same arguments, convention and output (float32 [H,W]) as ``border_weight_map``,
    without truncation. Memory and time grow as N * H * W for N instances.
    """
    instances = _check_instances(instances)
    ids = np.unique(instances[instances != 0])
    inf = np.full((2, *instances.shape), np.inf)
    stack = np.stack([ndi.distance_transform_edt(instances != i) for i in ids] + list(inf))
    stack.sort(axis=0)  # the two inf layers pad to >= 2 entries: d2 = inf below 2 instances
    d1, d2 = stack[0], stack[1]
    term = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    return np.where(instances == 0, term, 0.0).astype(np.float32)


def connected_instances(binary: np.ndarray, connectivity: int = 4) -> np.ndarray:
    """Label the connected components of a boolean mask [H,W] as instances.

    Returns int32 [H,W]: 0 where ``binary`` is False, 1..N for the N components
    (cv2.connectedComponents, ``connectivity`` 4 or 8). For ISBI the instances are the
    cells, i.e. the negative class of the membrane mask: pass ``~membrane``.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    binary = np.asarray(binary)
    if binary.ndim != 2:
        raise ValueError(f"binary must be a [H,W] mask, got shape {binary.shape}")
    _, labels = cv2.connectedComponents((binary != 0).astype(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
    return labels
