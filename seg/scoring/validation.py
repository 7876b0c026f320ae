"""Validation accumulator: counts at every threshold policy, histograms and calibration, on the device.

Used by training's per-epoch validation and by scripts/evaluate.py (one
implementation). ``update`` makes no host synchronisation (its work is the pure
:func:`batch_statistics`, checked under ``torch.compile(fullgraph=True)``);
``compute`` combines ranks under DDP, divides once and returns the ``val`` block of
summary.json.

Threshold policies, all three reported in ``val.by_threshold``:

- ``0.5``: logit > 0;
- ``prior_corrected``: logit > log q_eff per channel (q_eff the effective pos_weight),
  i.e. probability > q / (1 + q);
- ``tuned``: per channel, the probability threshold on a grid (0.01..0.99 by default)
  that maximises dataset-level Dice on the data evaluated, found from histograms of
  the logits of positives and negatives (no second pass). Tuned on the same images it
  is scored on, so optimistic: the block says so in ``note``. Pass ``tuned_thresholds``
  (probabilities found on validation) to apply fixed thresholds to another split.

The ``val`` block (all values plain floats, null where undefined):

- ``dice``, ``iou`` (macro), ``micro`` {dice, iou}, ``per_image`` {dice, iou},
  ``per_channel`` {name: {dice, iou}}, ``empty_image_fp_rate`` {name: x} (among images whose
  ground truth is empty in that channel, the fraction with any predicted pixel),
  ``thresholds`` {name: probability}: all at ``threshold`` (metrics.threshold);
- ``by_threshold`` {"0.5" | "prior_corrected" | "tuned": a block with those same keys;
  "tuned" adds ``note``};
- ``ece`` {"bins": 15, "raw": {name: x}, "prior_corrected": {name: x}, "raw_mean",
  "prior_corrected_mean"} (means over channels with valid pixels), ``brier`` {variant: {name: x}}
  and ``brier_mean``; with given Platt parameters (fitted on validation) also the ``platt``
  variant, ``platt_parameters`` {name: {a, b}} and ``platt_fitted_on``;
- ``threshold``, ``empty_policy``, ``num_images``;
- ``structure`` (with :class:`StructureSettings`): :mod:`seg.scoring.structure_scores`.

Post-hoc calibration: with ``calibration_pixels`` > 0 the Evaluator draws that many pixels per
image (seeded) and :meth:`Evaluator.fit_platt` fits Platt scaling sigmoid(a * logit + b) per
channel on them; another Evaluator applies the fitted ``platt`` parameters to a held-out split.

Under DDP, per-image counts and histograms are gathered (ranks hold different images)
and calibration sums all-reduced; dataset-level scores are then exact provided every
image is evaluated by exactly one rank. Every rank must call ``compute``.
"""

from __future__ import annotations

import torch

from seg.config.schema import MetricsConfig
from seg.distributed import all_gather_rows, all_reduce_counts
from seg.scoring.calibration import (
    ECE_BINS,
    CalibrationBins,
    brier_score,
    calibration_probability,
    expected_calibration_error,
    fit_platt,
    reliability_table,
    sample_pixels,
)
from seg.scoring.metrics import (
    EMPTY_POLICIES,
    dice_from_counts,
    iou_from_counts,
    score_block,
    to_float,
)
from seg.scoring.policies import FIXED_NOTE, POLICIES, TUNED_NOTE
from seg.scoring.structure_scores import StructureAccumulator, StructureSettings
from seg.scoring.thresholds import (
    best_threshold_indices,
    counts_at,
    grid_intervals,
    interval_histograms,
    logit_boundaries,
    prediction_counts,
    probability_grid,
)

# On the CPU a batch is worked through in parts of at most this many logits (every channel of a block of rows):
# their temporaries stay in the cache, and a part is below torch's grain size (32768), so that each operation on
# it runs on one thread: with several threads on a busy machine, thousands of parallel regions over so little work
# wait on one another far longer than they gain (100x slower, measured on 2 shared cores).
PART_ELEMENTS = 32_000


def batch_parts(shape: torch.Size, device: torch.device) -> list[tuple[slice, slice]]:
    """(images, rows) slices that cover a batch of ``shape`` [N,C,H,W] in pixel order: on the CPU one
    image at a time, in blocks of rows of at most :data:`PART_ELEMENTS` logits (at least one row);
    elsewhere the whole batch at once."""
    n, c, h, w = shape
    if device.type != "cpu":
        return [(slice(None), slice(None))]
    rows = max(1, PART_ELEMENTS // max(1, c * w))
    return [(slice(i, i + 1), slice(top, top + rows)) for i in range(n) for top in range(0, h, rows)]


def batch_statistics(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    log_q: torch.Tensor | float,
    boundaries: torch.Tensor,
    ece_bins: int = ECE_BINS,
    tuned_logits: torch.Tensor | None = None,
    platt: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """One validation batch, pure and without host synchronisation.

    logits, target [N,C,H,W]; valid [N,1,H,W] bool or None; log_q (C,1,1), or the float 0.0 for no shift
    (``prior_corrected`` is then ``0.5`` and ``ece_prior_corrected`` is ``ece_raw``, computed once);
    boundaries (G,) the logits of the probability grid (:func:`logit_boundaries` of a
    :func:`probability_grid`); tuned_logits (C,1,1) fixed tuned thresholds or None;
    platt: (a, b), each (C,1,1), or None.
    Returns per-image counts ``0.5`` / ``prior_corrected`` (/ ``tuned``) int64 [N,C,4],
    ``histograms`` int32 [N,C,2,G+1], ``ece_raw`` / ``ece_prior_corrected`` (/ ``ece_platt``)
    float64 [C,bins,4] (seg.scoring.calibration).

    Bit for bit what ``confusion_counts``, ``threshold_histograms`` and ``calibration_sums`` give over the
    whole batch, at a fraction of their cost on the CPU: the probabilities (the one transcendental step) are
    computed over the whole batch as those compute them, the rest part by part (:func:`batch_parts`) in
    pixel-major order (channels_last, the model's output layout): each logit's grid interval from its
    probability (:func:`grid_intervals`, no search), one scatter for the histograms and the counts at the
    fixed thresholds (:func:`interval_histograms`), and the float64 calibration sums, whose bins get their
    pixels in the order one call over the batch adds them (:class:`CalibrationBins`).
    """
    logits = logits.float()
    n, c = logits.shape[:2]
    shifted = not (isinstance(log_q, float) and log_q == 0.0)
    thresholds: dict[str, torch.Tensor | float] = {"0.5": 0.0}
    if shifted:
        thresholds["prior_corrected"] = log_q
    if tuned_logits is not None:
        thresholds["tuned"] = tuned_logits
    variants = {"raw": calibration_probability(logits)}
    if shifted:
        variants["prior_corrected"] = calibration_probability(logits, log_q)
    if platt is not None:  # p = sigmoid(a * logit + b)
        variants["platt"] = calibration_probability(logits, -platt[1], platt[0])
    # the parts below are blocks of rows of channels_last tensors (the model's output layout): dense in memory
    layout = torch.channels_last
    logits, truth_all = logits.contiguous(memory_format=layout), (target >= 0.5).contiguous(memory_format=layout)
    valid = None if valid is None else valid.bool().expand(logits.shape).contiguous(memory_format=layout)
    variants = {name: prob.contiguous(memory_format=layout) for name, prob in variants.items()}
    slots = boundaries.numel() + 1
    joint = torch.zeros(n, c, 2, slots, 1 << len(thresholds), dtype=torch.long, device=logits.device)
    parts = batch_parts(logits.shape, logits.device)
    largest = max(logits[images, :, rows].numel() for images, rows in parts)
    bins = CalibrationBins(tuple(variants), c, ece_bins, largest, logits.device)
    for images, rows in parts:
        part = (images, slice(None), rows)
        x, truth = logits[part], truth_all[part]
        ok = None if valid is None else valid[part]
        intervals = grid_intervals(x, variants["raw"][part], boundaries)
        predicted = [x > threshold for threshold in thresholds.values()]
        joint[images] += interval_histograms(intervals, truth, ok, slots, predicted)
        bins.add({name: prob[part] for name, prob in variants.items()}, truth, ok)
    stats = {name: prediction_counts(joint, bit) for bit, name in enumerate(thresholds)}
    stats |= {"histograms": joint.sum(dim=-1).int()} | {f"ece_{name}": bins.sums(name) for name in variants}
    if not shifted:
        stats["prior_corrected"], stats["ece_prior_corrected"] = stats["0.5"].clone(), stats["ece_raw"].clone()
    return stats


def _channel_vector(
    value: torch.Tensor | list | None, num_channels: int, what: str, default: float, dtype=torch.float32
) -> torch.Tensor:
    """A per-channel value as (C,1,1) (float32 by default); (C,) and (C,1,1) accepted, anything else refused."""
    if value is None:
        return torch.full((num_channels, 1, 1), default, dtype=dtype)
    value = torch.as_tensor(value, dtype=dtype)
    if value.shape not in ((num_channels,), (num_channels, 1, 1)):
        raise ValueError(f"{what} must have shape ({num_channels},) or ({num_channels},1,1); got {tuple(value.shape)}")
    return value.reshape(num_channels, 1, 1)


class Evaluator:
    """Accumulates one pass over validation data; ``compute`` gives the ``val`` block.

    log_q: (C,1,1) or (C,) logit shift log(q_eff) for ``prior_corrected`` (zeros when unweighted).
    empty: score where truth and prediction are both empty (nan | one | zero).
    grid_step: spacing of the probability grid searched by ``tuned``.
    tuned_thresholds: (C,) probabilities to use for ``tuned`` instead of searching.
    threshold: the policy whose scores ``compute`` reports at the top level (one of POLICIES).
    tuned_note: what ``by_threshold.tuned.note`` says when ``tuned_thresholds`` are given (where they came from).
    platt: (a, b) per channel (C,), Platt parameters fitted elsewhere, scored as the ``platt`` calibration
    variant; platt_fitted_on says where. calibration_pixels: pixels per image kept to fit Platt scaling
    (:meth:`fit_platt`), drawn with ``seed``. structure: structure metrics of the pass (or None).
    Memory per image: C*(3*4*8 + 2*(G+1)*4) bytes (C=12, G=99: about 10 KB).
    """

    def __init__(
        self,
        num_channels: int,
        device: torch.device | str,
        log_q: torch.Tensor | None = None,
        empty: str = "nan",
        grid_step: float = 0.01,
        ece_bins: int = ECE_BINS,
        tuned_thresholds: torch.Tensor | list[float] | None = None,
        threshold: str = "0.5",
        tuned_note: str = FIXED_NOTE,
        platt: tuple[torch.Tensor, torch.Tensor] | None = None,
        platt_fitted_on: str | None = None,
        calibration_pixels: int = 0,
        seed: int = 0,
        structure: StructureSettings | None = None,
    ) -> None:
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
        if threshold not in POLICIES:
            raise ValueError(f"threshold must be one of {POLICIES}, got {threshold!r}")
        self.threshold = threshold
        self.num_channels = num_channels
        self.device = torch.device(device)
        self.empty = empty
        self.ece_bins = ece_bins
        shift = _channel_vector(log_q, num_channels, "log_q", 0.0)
        self.log_q = shift.to(self.device)
        # unweighted runs (q_eff = 1): prior_corrected is the 0.5 policy; batch_statistics then counts it once
        self.shift: torch.Tensor | float = 0.0 if bool((shift == 0).all()) else self.log_q
        self.grid = probability_grid(grid_step)
        self.boundaries = logit_boundaries(self.grid).to(self.device)
        self.tuned_thresholds = None
        self.tuned_logits = None
        if tuned_thresholds is not None:
            self.tuned_thresholds = _channel_vector(tuned_thresholds, num_channels, "tuned_thresholds", 0.5)
            self.tuned_logits = torch.logit(self.tuned_thresholds.double()).float().to(self.device)
        self.tuned_note = tuned_note
        self.platt = None
        self.platt_fitted_on = platt_fitted_on
        if platt is not None:
            a, b = (_channel_vector(p, num_channels, "platt", 0.0, torch.float64).to(self.device) for p in platt)
            self.platt = (a, b)
        self.calibration_pixels = calibration_pixels
        self.seed = seed
        self.structure_settings = structure
        self.reset()

    @classmethod
    def from_config(
        cls,
        metrics: MetricsConfig,
        num_channels: int,
        device: torch.device | str,
        log_q: torch.Tensor | None = None,
        tuned_thresholds: torch.Tensor | list[float] | None = None,
        **options,
    ) -> Evaluator:
        """An Evaluator with the config's ``metrics.empty`` and ``metrics.threshold`` (their one reader);
        ``options`` are the other keyword arguments of the Evaluator."""
        return cls(
            num_channels,
            device,
            log_q,
            metrics.empty,
            tuned_thresholds=tuned_thresholds,
            threshold=metrics.threshold,
            **options,
        )

    def reset(self) -> None:
        """Forget everything accumulated (start of a new validation pass)."""
        self.parts: dict[str, list[torch.Tensor]] = {"0.5": [], "prior_corrected": [], "tuned": [], "histograms": []}
        self.parts["index"] = []
        variants = ("raw", "prior_corrected", "platt") if self.platt is not None else ("raw", "prior_corrected")
        self.ece = {
            name: torch.zeros(self.num_channels, self.ece_bins, 4, dtype=torch.float64, device=self.device)
            for name in variants
        }
        self.samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.structure = StructureAccumulator(self.structure_settings) if self.structure_settings else None
        self.seen = 0
        self.computed: tuple[dict[str, torch.Tensor], dict] | None = None  # per-image counts, structure (compute)

    @torch.no_grad()
    def update(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> None:
        """logits, target [N,C,H,W]; valid [N,1,H,W] bool (None: every pixel); index (N,): the items'
        dataset indices (default: their order of arrival). No host sync, except for structure metrics."""
        if logits.shape[1] != self.num_channels:
            raise ValueError(f"Evaluator has {self.num_channels} channels, logits have {logits.shape[1]}")
        stats = batch_statistics(
            logits, target, valid, self.shift, self.boundaries, self.ece_bins, self.tuned_logits, self.platt
        )
        for name in ("0.5", "prior_corrected", "tuned", "histograms"):
            if name in stats:
                self.parts[name].append(stats[name])
        for name in self.ece:
            self.ece[name] += stats[f"ece_{name}"]
        if index is None:
            index = torch.arange(self.seen, self.seen + logits.shape[0], device=self.device)
        self.seen += logits.shape[0]
        self.parts["index"].append(index.to(self.device).long())
        if self.calibration_pixels:
            self.samples.append(sample_pixels(logits, target, valid, self.calibration_pixels, self.generator))
        if self.structure is not None:
            self.structure.update(logits, target, valid, index)

    def fit_platt(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Platt parameters (a, b), each (C,) float64, fitted on the pixels drawn in this pass
        (None when ``calibration_pixels`` is 0 or nothing was evaluated)."""
        if not self.samples:
            return None
        logits, targets, mask = (torch.cat(parts, dim=1) for parts in zip(*self.samples, strict=True))
        return fit_platt(logits, targets, mask)

    def _gathered(self, name: str, trailing: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        parts = self.parts[name]
        local = torch.cat(parts) if parts else torch.zeros((0, *trailing), dtype=dtype, device=self.device)
        return all_gather_rows(local)

    def _reduced_ece(self) -> dict[str, torch.Tensor]:
        return {name: all_reduce_counts(sums.clone()).cpu() for name, sums in self.ece.items()}

    def collect(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-image counts [N,C,4] (CPU, images of all ranks, in dataset index order) and probability
        thresholds (C,) float64 under each policy; the tuned search runs here, on the summed histograms."""
        c, slots = self.num_channels, self.boundaries.numel() + 1
        order = self._order()

        def gathered(name: str, trailing: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return self._gathered(name, trailing, dtype).cpu()[order]

        counts = {name: gathered(name, (c, 4), torch.long) for name in ("0.5", "prior_corrected")}
        thresholds = {
            "0.5": torch.full((c,), 0.5, dtype=torch.float64),
            "prior_corrected": torch.sigmoid(self.log_q.double().flatten().cpu()),
        }
        if self.tuned_thresholds is not None:
            counts["tuned"] = gathered("tuned", (c, 4), torch.long)
            thresholds["tuned"] = self.tuned_thresholds.double().flatten()
        else:
            histograms = gathered("histograms", (c, 2, slots), torch.int32)
            index = best_threshold_indices(histograms.long().sum(dim=0))
            counts["tuned"] = counts_at(histograms, index)
            thresholds["tuned"] = self.grid[index]
        return counts, thresholds

    def _order(self) -> torch.Tensor:
        """The permutation that puts the gathered rows (rank order under DDP) in dataset index order."""
        return torch.argsort(self._gathered("index", (), torch.long).cpu(), stable=True)

    def compute(self, class_names: list[str], threshold: str | None = None) -> dict:
        """The summary ``val`` block: the chosen threshold's scores (``threshold``, default the
        Evaluator's), plus ``by_threshold``, ``ece``, ``empty_policy``, ``threshold`` and ``num_images``."""
        threshold = self.threshold if threshold is None else threshold
        if threshold not in POLICIES:
            raise ValueError(f"threshold must be one of {POLICIES}, got {threshold!r}")
        if len(class_names) != self.num_channels:
            raise ValueError(f"{len(class_names)} class names for {self.num_channels} channels")
        counts, thresholds = self.collect()
        by_threshold = {}
        for name in POLICIES:
            block = score_block(counts[name], class_names, self.empty)
            block["thresholds"] = {n: round(float(p), 6) for n, p in zip(class_names, thresholds[name], strict=False)}
            by_threshold[name] = block
        by_threshold["tuned"]["note"] = self.tuned_note if self.tuned_thresholds is not None else TUNED_NOTE
        block = {
            **by_threshold[threshold],
            "threshold": threshold,
            "empty_policy": self.empty,
            "num_images": int(counts["0.5"].shape[0]),
            "by_threshold": by_threshold,
            "ece": self._ece_block(class_names),
        }
        structure_per_image: dict = {}
        if self.structure is not None:
            block["structure"], structure_per_image = self.structure.compute(thresholds, class_names)
        self.computed = (counts, structure_per_image)
        return block

    def per_image(self, class_names: list[str], stems: list[str]) -> dict[str, dict[str, dict[str, float | None]]]:
        """{policy: {stem: {"dice", "iou" (macro over the image's channels, NaN left out), and the structure
        keys (mean over channels)}}}, for the paired statistics over images; ``stems`` by dataset index.
        Call after :meth:`compute`."""
        if self.computed is None:
            raise RuntimeError("Evaluator.per_image needs compute() first")
        counts, structure = self.computed
        indices = self._gathered("index", (), torch.long).cpu()[self._order()].tolist()  # the rows' order
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        for policy in POLICIES:
            dice = dice_from_counts(counts[policy], self.empty).nanmean(dim=1)
            iou = iou_from_counts(counts[policy], self.empty).nanmean(dim=1)
            out[policy] = {
                stems[i]: {
                    "dice": to_float(dice[row]),
                    "iou": to_float(iou[row]),
                    **structure.get(policy, {}).get(i, {}),
                }
                for row, i in enumerate(indices)
            }
        return out

    def _ece_block(self, class_names: list[str]) -> dict:
        block: dict = {"bins": self.ece_bins}
        brier: dict = {}
        brier_mean: dict = {}
        for name, sums in self._reduced_ece().items():
            ece, squared = expected_calibration_error(sums), brier_score(sums)
            block[name] = {n: to_float(ece[c]) for c, n in enumerate(class_names)}
            block[f"{name}_mean"] = to_float(ece.nanmean())
            brier[name] = {n: to_float(squared[c]) for c, n in enumerate(class_names)}
            brier_mean[name] = to_float(squared.nanmean())
        block["brier"], block["brier_mean"] = brier, brier_mean
        if self.platt is not None:
            a, b = (p.flatten().double().cpu() for p in self.platt)
            block["platt_parameters"] = {n: {"a": float(a[c]), "b": float(b[c])} for c, n in enumerate(class_names)}
            if self.platt_fitted_on:
                block["platt_fitted_on"] = self.platt_fitted_on
        return block

    def reliability(self) -> dict[str, dict]:
        """Reliability tables ({"raw": ..., "prior_corrected": ..., "platt": ...}) for the reliability plot."""
        return {name: reliability_table(sums) for name, sums in self._reduced_ece().items()}
