"""The content of mask_stats.json (layout: README.md, "Audit your masks first"), and reading it back.

``build_stats`` turns an ``AuditTally`` and its ``AuditPlan`` into the JSON; the recommended
weights come from ``seg.weighting.formulas``. Training reads the file back (``loss.stats_file``)
with ``seg.data.counts.read_mask_stats``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from seg.audit.scan import AuditPlan, AuditSettings
from seg.audit.tally import FRACTION_EDGES, AuditTally, ObjectTally
from seg.data.counts import NEGATIVES, MaskCounts, positive_values_message
from seg.data.formats import Problem

SCHEMA_VERSION = 1


def _sig(value: float) -> float:
    return float(f"{value:.6g}")


def recommended_pos_weights(counts: MaskCounts, clamp: tuple[float, float]) -> dict:
    """pos_weight per channel and global, under both negative definitions, from seg.weighting.formulas.

    Returns {definition: {"negative": int64 (C,), "per_channel": [C floats], "global": float,
    "unclamped": [C floats or None]}}.
    """
    import torch

    from seg.weighting.formulas import global_pos_weight, negative_counts, per_channel_pos_weight

    positive = torch.from_numpy(counts.positive_pixels)
    valid, all_zero = torch.tensor(counts.valid_pixels), torch.tensor(counts.all_zero_pixels)
    out = {}
    for definition in NEGATIVES:
        negative = negative_counts(positive, valid, all_zero, definition)
        out[definition] = {
            "negative": negative.numpy().astype(np.int64),
            "per_channel": [_sig(w) for w in per_channel_pos_weight(positive, negative, clamp).flatten().tolist()],
            "global": _sig(float(global_pos_weight(positive, negative, clamp))),
            "unclamped": [
                _sig(n / p) if p else None for n, p in zip(negative.tolist(), positive.tolist(), strict=False)
            ],
        }
    return out


def _fraction(part: int, whole: int) -> float | None:
    return _sig(part / whole) if whole else None


def _histogram(counts: np.ndarray) -> dict:
    """Log2 bins without the trailing empty ones: bin k holds [2**k, 2**(k+1))."""
    last = int(np.flatnonzero(counts).max()) + 1 if counts.any() else 0
    return {"bin_lower_edges": [2**k for k in range(last)], "counts": counts[:last].tolist()}


def _objects_json(objects: ObjectTally, settings: AuditSettings) -> dict:
    channels = []
    for c, name in enumerate(objects.names):
        n, per_image = int(objects.objects[c]), objects.per_image_hist[c]
        last = int(np.flatnonzero(per_image).max()) + 1 if per_image.any() else 0
        channels.append(
            {
                "name": name,
                "objects": n,
                "objects_per_image_mean": _fraction(n, objects.images),
                "objects_per_image_max": int(objects.max_per_image[c]),
                "images_without_objects": int(per_image[0]),
                "objects_per_image_histogram": {
                    "bin_lower_edges": [0] + [2**k for k in range(last - 1)],
                    "counts": per_image[:last].tolist(),
                },
                "object_size_max": int(objects.max_size[c]),
                "object_size_histogram": _histogram(objects.size_hist[c]),
                "images_with_touching_objects": int(objects.touching[c])
                if settings.objects_from == "instance"
                else None,
            }
        )
    return {
        "source": settings.objects_from,
        "connectivity": settings.connectivity,
        "images": objects.images,
        "channels": channels,
    }


def build_stats(tally: AuditTally, plan: AuditPlan) -> dict:
    """The content of mask_stats.json (layout: README.md, "Audit your masks first")."""
    counts, spec = tally.counts, plan.settings.spec
    weights = recommended_pos_weights(counts, plan.clamp)
    channels = []
    for c, name in enumerate(spec.classes):
        positive = int(counts.positive_pixels[c])
        channels.append(
            {
                "name": name,
                "positive_pixels": positive,
                "total_pixels": counts.valid_pixels,
                "positive_fraction": _fraction(positive, counts.valid_pixels),
                "images_with_positives": int(counts.images_with_positives[c]),
                "empty_images": counts.images - int(counts.images_with_positives[c]),
                "negative_pixels": {d: int(weights[d]["negative"][c]) for d in NEGATIVES},
                "pos_weight": {d: weights[d]["per_channel"][c] for d in NEGATIVES},
                "pos_weight_unclamped": {d: weights[d]["unclamped"][c] for d in NEGATIVES},
                "image_fraction_histogram": {
                    "empty": int(tally.fraction_hist[c, 0]),
                    "counts": tally.fraction_hist[c, 1:].tolist(),
                },
            }
        )
    allowed_note = (
        None if spec.fmt == "multilabel" else ("all_zero applies to multilabel masks only; listed for comparison")
    )
    problems = sorted(
        set(
            plan.problems
            + tally.problems
            + never_positive_problems(tally, plan)
            + absent_positive_problems(tally, plan)
        ),
        key=lambda p: (p.file, p.kind, p.detail),
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "source": plan.source,
        "dataset": plan.dataset,
        "split": plan.split,
        "format": {
            "mask_format": spec.fmt,
            "classes": list(spec.classes),
            "positive_values": list(spec.positive_values) if spec.positive_values else None,
            "ignore_index": spec.ignore_index,
        },
        "masks_found": len(plan.items),
        "images": counts.images,
        "masks_not_counted": len(plan.items) - counts.images,
        "pixels": {
            "total": counts.total_pixels,
            "valid": counts.valid_pixels,
            "ignored": counts.total_pixels - counts.valid_pixels,
            "all_zero": counts.all_zero_pixels,
            "all_zero_fraction": _fraction(counts.all_zero_pixels, counts.valid_pixels),
        },
        "images_without_valid_pixels": tally.images_all_ignored,
        "channels": channels,
        "global_pos_weight": {d: weights[d]["global"] for d in NEGATIVES},
        "clamp": list(plan.clamp),
        "negatives_note": allowed_note,
        "image_fraction_bin_edges": [_sig(e) for e in FRACTION_EDGES],
        "image_sizes": [{"width": w, "height": h, "masks": n} for (h, w), n in sorted(tally.image_sizes.items())],
        "mask_dtypes": dict(sorted(tally.mask_dtypes.items())),
        "mask_values": [{"value": v, "pixels": p, "files": f} for v, (p, f) in sorted(tally.values.items())],
        "objects": _objects_json(tally.objects, plan.settings) if tally.objects is not None else None,
        "problem_counts": dict(sorted(Counter(p.kind for p in problems).items())),
        "problems": [{"file": p.file, "kind": p.kind, "detail": p.detail} for p in problems],
        "notes": plan.notes,
    }


def never_positive_problems(tally: AuditTally, plan: AuditPlan) -> list[Problem]:
    """A channel with no positive pixel in any counted mask: one problem per channel."""
    where = plan.source.get("masks") or plan.source.get("root", "")
    return [
        Problem(
            where,
            "never_positive",
            f"channel '{name}' has no positive pixel in the {tally.counts.images} "
            f"masks counted ({plan.split} split): its pos_weight takes the clamp maximum",
        )
        for name, n in zip(plan.settings.spec.classes, tally.counts.positive_pixels, strict=False)
        if tally.counts.images and n == 0
    ]


def absent_positive_problems(tally: AuditTally, plan: AuditPlan) -> list[Problem]:
    """A configured ``data.positive_values`` entry that no counted mask holds (what training refuses).

    Audits of a config only: ``--masks`` without ``--positive-values`` assumes both 1 and 255.
    """
    if "config" not in plan.source or not tally.counts.images:
        return []
    root = plan.source.get("root", "")
    where = f"mask of {root} (train and val)" if plan.split == "all" else f"{plan.split} mask of {root}"
    message = positive_values_message(plan.settings.spec, tally.values, where)
    return [] if message is None else [Problem(root, "positive_value_absent", message)]
