"""The U-Net border term (Ronneberger et al. 2015, eq. 2) from instance label images.

The U-Net weight map is ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))``
with d1, d2 the Euclidean distances from pixel x to the nearest and the second-nearest
instance. As in the official implementation, the border term applies only to pixels outside
every instance. The functions here return the border term only: the class weight w_c is
added per batch (:func:`seg.weighting.maps.class_weight_map`). ``border_weight_map`` is the
fast version (see its docstring); ``naive_border_weight_map`` is the obviously-correct
reference used by the tests and the benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np
import scipy.ndimage as ndi

SCAN_SCALE = 3  # background pixels with two instances within their 7x7 window are resolved by the offset scan
SCAN_PAD = math.isqrt(2 * SCAN_SCALE**2)  # the zero border the scan reads over (offsets |o|**2 <= 2 SCAN_SCALE**2)
SCAN_CHUNK = 1 << 16  # pixels per scan: the [pixels, offsets] ids stay a few MB


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
        ids = np.union1d(np.zeros(1, instances.dtype), instances)  # sorted, ids[0] == 0; uint64 stays uint64
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
    """The U-Net border term, with distances computed only where the term can reach ``eps``.

    Args:
        instances: int label image [H,W], any integer dtype; 0 = background, every other
            value is one instance (ids may be non-consecutive).
        w0, sigma: the border term's height and width (paper: 10 and 5 px).
        eps: accuracy of the truncation: d1 and d2 are exact wherever d1 + d2 <= R =
            sigma * sqrt(2 ln(w0 / eps)); elsewhere the term is < eps and may be dropped.

    Returns:
        float32 [H,W]: w0 * exp(-(d1 + d2)**2 / (2 sigma**2)) on background pixels
        (instances == 0), 0 inside instances. With fewer than 2 instances d2 = inf and the
        term is 0 everywhere. The U-Net map is w_c plus this.

    A background pixel has d1 >= 1, so only d2 <= R - 1 counts. Pixels are sorted by how far their
    second-nearest instance can be: a min and a max filter of the ids over a growing (2k+1)**2 window
    (k = 1, 2, 3, 4, 6, ...) give each background pixel the first k at which its window holds two
    instances, so that d2 <= k sqrt 2. Then, all exact:

    - far pixels (k > ``SCAN_SCALE``, or no two instances by R - 1): per instance,
      cv2.distanceTransform (exact L2, DIST_MASK_PRECISE) on its bounding box grown by as much as
      the far pixels around it ask, keeping the two smallest distances per pixel as a running pair.
      cv2 returns float32 distances; exact squared distances are integers, so d = sqrt(rint(d**2))
      restores them. The near pixels these crops cover are computed with them;
    - the other near pixels (thin background, e.g. membranes between cells): d1 and d2 are read off
      the offsets |o|**2 <= 2 k**2 around the pixel, in increasing length.
    """
    instances = _check_instances(instances)
    weight = np.zeros(instances.shape, dtype=np.float32)
    cap = math.floor(border_radius(w0, sigma, eps) - 1.0)  # the largest d2 that counts
    if cap < 1 or not instances.any():  # d1 + d2 >= 2 > R everywhere, or no instance
        return weight
    background = instances == 0
    near, margin = _second_bounds(instances, background, cap)
    to_scan = None  # every near pixel
    if margin.any():
        d1, d2, to_scan = _crop_pairs(instances, margin)
        sq1 = np.rint(np.square(d1[background], dtype=np.float64))
        sq2 = np.rint(np.square(d2[background], dtype=np.float64))
        weight[background] = _term(sq1, sq2, w0, sigma)  # exact except on the near pixels to scan (below)
    padded = np.pad(instances, SCAN_PAD)
    for radius2, pixels in near:
        if to_scan is not None:
            pixels = pixels[to_scan.ravel()[pixels]]
        weight.ravel()[pixels] = _term(*_scan_pairs(padded, pixels, radius2), w0, sigma)
    return weight


def _term(sq1: np.ndarray, sq2: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """w0 * exp(-(d1 + d2)**2 / (2 sigma**2)), float64, from exact squared distances (inf: no instance)."""
    return w0 * np.exp(-np.square(np.sqrt(sq1) + np.sqrt(sq2)) / (2.0 * sigma * sigma))


def _window_scales(cap: int) -> Iterator[int]:
    """Window half-sizes k = 1, 2, 3, 4, 6, 8, 11, 15, ... while floor(k sqrt 2) < cap."""
    k = 1
    while math.isqrt(2 * k * k) < cap:
        yield k
        k = max(k + 1, round(1.4 * k))


def _second_bounds(
    instances: np.ndarray, background: np.ndarray, cap: int
) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
    """Where the second-nearest instance of each background pixel can be.

    Returns the near pixels as (radius2, flat indices) per k <= ``SCAN_SCALE``: both nearest
    instances lie within sqrt(radius2) = k sqrt 2; and margin [H,W] for the far pixels: the largest
    Chebyshev offset at which an instance can be one of their two nearest while d2 <= cap
    (floor(k sqrt 2), or ``cap``); 0 on near pixels and instances.
    """
    ids: np.ndarray
    if int(instances.max()) < np.iinfo(np.uint16).max:
        ids, top = instances.astype(np.uint16), float(np.iinfo(np.uint16).max)
    else:  # float64: two ids that round alike only look like one instance, a looser bound
        ids, top = instances.astype(np.float64), math.inf
    high = ids  # for the max filter: background (0) never wins
    low = ids.copy()
    low[background] = top  # for the min filter: background never wins
    margin = np.zeros(instances.shape, dtype=np.min_scalar_type(cap))
    pending = background.copy()
    near = []
    grown = 0
    for k in _window_scales(cap):
        kernel = np.ones((2 * (k - grown) + 1, 2 * (k - grown) + 1), np.uint8)
        high = cv2.dilate(high, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        low = cv2.erode(low, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=top)
        grown = k
        two = pending & (low < high)  # two instances within the window: d2 <= k sqrt 2
        pending &= ~two
        if k <= SCAN_SCALE:
            near.append((2 * k * k, np.flatnonzero(two)))
        else:
            margin[two] = math.isqrt(2 * k * k)
        if not pending.any():
            break
    margin[pending] = cap
    return near, margin


def _scan_pairs(padded: np.ndarray, pixels: np.ndarray, radius2: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances from ``pixels`` (flat indices) to their nearest and second-nearest instance.

    ``padded``: the label image with a zero border ``SCAN_PAD`` wide. Every pixel must have two
    instances within sqrt(radius2). The ids at the offsets within that radius are read in increasing
    length: the first id met is the nearest instance, the first other id the second-nearest
    (at the same length when two instances tie, as in the reference).
    """
    reach = math.isqrt(radius2)
    width = padded.shape[1]
    offsets = sorted(
        (dy * dy + dx * dx, dy * width + dx)
        for dy in range(-reach, reach + 1)
        for dx in range(-reach, reach + 1)
        if 0 < dy * dy + dx * dx <= radius2
    )
    length2 = np.array([length for length, _ in offsets], dtype=np.int64)
    step = np.array([shift for _, shift in offsets], dtype=np.int64)
    centre = pixels + (pixels // (width - 2 * SCAN_PAD) * 2 + width + 1) * SCAN_PAD  # (row + pad) * width + col + pad
    flat = padded.ravel()
    sq1 = np.empty(len(pixels), dtype=np.int64)
    sq2 = np.empty(len(pixels), dtype=np.int64)
    for start in range(0, len(pixels), SCAN_CHUNK):
        part = slice(start, start + SCAN_CHUNK)
        ids = flat[centre[part, None] + step]  # [pixels, offsets], nearest offsets first
        hit = ids != 0
        first = hit.argmax(axis=1)
        nearest = np.take_along_axis(ids, first[:, None], axis=1)
        sq1[part] = length2[first]
        sq2[part] = length2[(hit & (ids != nearest)).argmax(axis=1)]
    return sq1, sq2


def _crop_pairs(instances: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d1, d2, to_scan) [H,W] from per-instance crops: d1, d2 float32, exact on the far pixels (margin > 0).

    An instance is one of the two nearest of a far pixel x only within margin[x] (Chebyshev) of x.
    Its crop is its bounding box grown by g, the largest margin within g of the box, found by
    shrinking g from the largest margin until it holds; no far pixel around: no crop. Every margin
    exceeds the reach of every near pixel (their k is smaller), so a crop also covers the near pixels
    whose nearest two it may hold: d1, d2 are exact there too, except within ``SCAN_PAD`` of an
    instance without a crop, which to_scan (bool) marks.
    """
    height, width = instances.shape
    d1 = np.full(instances.shape, np.inf, dtype=np.float32)
    d2 = np.full(instances.shape, np.inf, dtype=np.float32)
    to_scan = np.zeros(instances.shape, dtype=bool)

    def grown(rows: slice, cols: slice, by: int) -> tuple[slice, slice]:
        return (
            slice(max(rows.start - by, 0), min(rows.stop + by, height)),
            slice(max(cols.start - by, 0), min(cols.stop + by, width)),
        )

    largest = int(margin.max())
    for label, (rows, cols) in _instance_boxes(instances):
        grow, asked = largest + 1, largest
        while asked < grow:
            grow = asked
            asked = int(margin[grown(rows, cols, grow)].max())
        if grow == 0:
            to_scan[grown(rows, cols, SCAN_PAD)] = True
            continue
        crop = grown(rows, cols, grow)
        outside = (instances[crop] != label).view(np.uint8)  # distance to the nearest 0 = to the instance
        dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        d1_crop, d2_crop = d1[crop], d2[crop]  # views: updated in place
        cv2.min(d2_crop, cv2.max(d1_crop, dist), dst=d2_crop)
        cv2.min(d1_crop, dist, dst=d1_crop)
    return d1, d2, to_scan


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
