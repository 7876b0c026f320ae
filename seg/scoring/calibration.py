"""Calibration per channel: expected calibration error (ECE), Brier score, reliability tables and
Platt scaling (the math; the reliability diagram is drawn by :mod:`seg.outputs.reliability`).

Each channel is a binary problem: the predicted probability p of the positive class is compared
with the observed label y = (target >= 0.5). In general

    p = sigmoid(a * logit + b),   a = ``scale`` (default 1), b = -``log_q`` (default 0),

which covers the raw model (a = 1, b = 0), the prior correction (a = 1, b = -log q_eff: a model
trained with pos_weight q estimates odds q times too high, and the shift undoes that) and Platt
scaling (a, b fitted per channel on held-out pixels by :func:`fit_platt`; pass
``scale=a.view(C,1,1)``, ``log_q=-b.view(C,1,1)``).

Valid pixels are split into ``bins`` equal-width bins of p ([0, 1/bins), ..., [1 - 1/bins, 1]); per
bin we keep four sums (pixels, sum of p, positives, sum of (p - y)^2) that add up over batches and
DDP ranks. Then, per channel, with n_b pixels, conf_b = mean p and freq_b = fraction of positives
in bin b:

    ECE   = sum_b (n_b / n) * |freq_b - conf_b| = sum_b |positives_b - sum p_b| / n
    Brier = sum_b sum (p - y)^2 over bin b / n  = mean over valid pixels of (p - y)^2
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from seg.scoring.metrics import pixel_major, slot_counts

ECE_BINS = 15
PIXELS, PROB_SUM, POSITIVES, SQUARED_ERROR = range(4)
SUMS_COLUMNS = 4  # the last dimension of calibration_sums: PIXELS, PROB_SUM, POSITIVES, SQUARED_ERROR


def calibration_probability(
    logits: torch.Tensor, log_q: torch.Tensor | float = 0.0, scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """p = sigmoid(scale * logits - log_q), as :func:`calibration_sums` bins it: float32 (float64 with a
    float64 ``scale`` or ``log_q``), the shape of ``logits``. A ``scale`` of 1.0 and a ``log_q`` of 0.0 (floats)
    are skipped: multiplying by 1 and subtracting 0 change no value."""
    x = logits.float()
    if not (isinstance(scale, float) and scale == 1.0):
        x = x * scale
    if not (isinstance(log_q, float) and log_q == 0.0):
        x = x - log_q
    return torch.sigmoid(x)


class CalibrationBins:
    """The running sums of :func:`calibration_sums` for ``channels`` channels, of one or more probability
    ``variants`` of the same pixels (e.g. raw and prior-corrected), added part by part (each of at most
    ``elements`` pixels times channels).

    Parts of a batch added in pixel order (image by image, rows top to bottom, each part with every channel)
    give bit for bit the sums of one call over the whole batch: each float64 bin adds its pixels in the same
    order. That lets :func:`seg.scoring.validation.batch_statistics` work through a large batch in parts that
    fit the CPU's cache; the variants share each part's labels, and the float64 scatters reuse two buffers.
    """

    def __init__(self, variants: Sequence[str], channels: int, bins: int, elements: int, device: torch.device):
        self.channels, self.bins = channels, bins
        self.spare = channels * bins * 2  # slots (channel, bin, class); invalid pixels go to the spare ones after
        self.first = (torch.arange(channels, device=device, dtype=torch.int32) * (bins * 2)).view(1, channels, 1, 1)
        size = self.spare + 2 * bins
        self.pixels = {name: torch.zeros(size, dtype=torch.long, device=device) for name in variants}
        self.prob_sum = {name: torch.zeros(size, dtype=torch.float64, device=device) for name in variants}
        self.squared = {name: torch.zeros(size, dtype=torch.float64, device=device) for name in variants}
        self.index = torch.empty(elements, dtype=torch.long, device=device)
        self.values = torch.empty(elements, dtype=torch.float64, device=device)
        self.positive = torch.empty(elements, dtype=torch.float64, device=device)

    def add(self, probs: dict[str, torch.Tensor], truth: torch.Tensor, valid: torch.Tensor | None) -> None:
        """probs {variant: p [N,C,H,W]} (:func:`calibration_probability`), truth [N,C,H,W] bool (target >= 0.5),
        valid [N,1,H,W] (or [N,C,H,W]) bool or None. No host synchronisation.

        Slots are worked out in int32 (a NaN probability goes to bin 0); the float64 sums add p and
        (p - y)^2 as :func:`calibration_sums` always has. Pixels are added in pixel-major order
        (:func:`pixel_major`: free for channels_last tensors): each slot, of one channel, still gets its pixels
        in (image, row, column) order, and consecutive adds go to different channels' slots, so that they
        need not wait for one another."""
        count = truth.numel()
        index, values, positive = self.index[:count], self.values[:count], self.positive[:count]
        positive.copy_(pixel_major(truth))
        first = truth.int().add_(self.first)  # slot of bin 0 of the pixel's channel and class
        if valid is not None:
            first = torch.where(valid.bool(), first, self.spare)
        for name, prob in probs.items():
            which = (prob * self.bins).nan_to_num_(0.0).clamp_(max=self.bins - 1).int()
            slots = pixel_major(which.mul_(2).add_(first))
            self.pixels[name] += slot_counts(slots, self.pixels[name].numel())
            index.copy_(slots)
            self.prob_sum[name].scatter_add_(0, index, values.copy_(pixel_major(prob)))
            self.squared[name].scatter_add_(0, index, values.sub_(positive).square_())

    def sums(self, variant: str) -> torch.Tensor:
        """float64 [C, bins, SUMS_COLUMNS] (columns PIXELS, PROB_SUM, POSITIVES, SQUARED_ERROR) of ``variant``."""
        c, bins, used = self.channels, self.bins, self.spare
        by_class = self.pixels[variant][:used].view(c, bins, 2)
        return torch.stack(
            [
                by_class.sum(-1).double(),
                self.prob_sum[variant][:used].view(c, bins, 2).sum(-1),
                by_class[..., 1].double(),
                self.squared[variant][:used].view(c, bins, 2).sum(-1),
            ],
            dim=-1,
        )


def calibration_sums(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    log_q: torch.Tensor | float = 0.0,
    bins: int = ECE_BINS,
    scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Per channel and probability bin: pixels, sum of p, positives, sum of (p - y)^2.
    float64 [C, bins, SUMS_COLUMNS] (columns PIXELS, PROB_SUM, POSITIVES, SQUARED_ERROR).

    logits, target [N,C,H,W]; valid [N,1,H,W] bool or None; y = (target >= 0.5);
    p = sigmoid(scale * logits - log_q), with log_q and scale each a float or a (C,1,1) tensor on
    the device of ``logits`` (a = scale, b = -log_q in the module's p = sigmoid(a * logit + b)).
    No host synchronisation.
    """
    sums = CalibrationBins(("p",), logits.shape[1], bins, logits.numel(), logits.device)
    sums.add({"p": calibration_probability(logits, log_q, scale)}, target >= 0.5, valid)
    return sums.sums("p")


def _per_pixel(total: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """total / pixels per channel, NaN where a channel has no pixels."""
    return torch.where(pixels > 0, total / pixels.clamp(min=1), torch.full_like(total, float("nan")))


def expected_calibration_error(sums: torch.Tensor) -> torch.Tensor:
    """ECE per channel from sums [C, bins, SUMS_COLUMNS]: float64 (C,), NaN for a channel without pixels."""
    gap = (sums[..., POSITIVES] - sums[..., PROB_SUM]).abs().sum(-1)
    return _per_pixel(gap, sums[..., PIXELS].sum(-1))


def brier_score(sums: torch.Tensor) -> torch.Tensor:
    """Brier score per channel from sums [C, bins, SUMS_COLUMNS]: the mean over valid pixels of
    (p - y)^2, y = (target >= 0.5). float64 (C,), NaN for a channel without pixels."""
    return _per_pixel(sums[..., SQUARED_ERROR].sum(-1), sums[..., PIXELS].sum(-1))


def reliability_table(sums: torch.Tensor) -> dict[str, np.ndarray]:
    """Per channel and bin: ``confidence`` (mean p), ``frequency`` (fraction positive),
    ``pixels``; NaN in empty bins. Arrays [C, bins]; ``edges`` (bins + 1,)."""
    table = sums.detach().double().cpu().numpy()
    pixels = table[..., PIXELS]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(pixels > 0, table[..., PROB_SUM] / pixels, np.nan)
        frequency = np.where(pixels > 0, table[..., POSITIVES] / pixels, np.nan)
    return {
        "confidence": confidence,
        "frequency": frequency,
        "pixels": pixels,
        "edges": np.linspace(0.0, 1.0, table.shape[1] + 1),
    }


def sample_pixels(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    count: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``count`` pixels per image for :func:`fit_platt`: ``count`` positions per image drawn
    uniformly at random, with replacement, among all H*W pixels of the image (the same positions for
    every channel) with torch.randint and ``generator`` (seeded by the caller; drawn on the generator's
    device, or on the logits' device when None, so pass a generator on the logits' device to avoid a
    transfer), then gathered. A drawn pixel that is not valid is kept but masked out, so the number of
    usable pixels per image is at most ``count`` and there is no host synchronisation.

    logits, target [N,C,H,W]; valid [N,1,H,W] bool or None. Returns, with K = N * count, logits
    [C, K] float32, targets [C, K] float32 (1.0 where target >= 0.5, else 0.0) and a mask [C, K] bool.
    """
    n, c = logits.shape[:2]
    where = generator.device if generator is not None else logits.device
    drawn = torch.randint(0, logits[0, 0].numel(), (n, 1, count), generator=generator, device=where)
    drawn = drawn.to(logits.device)

    def gather(values: torch.Tensor) -> torch.Tensor:
        picked = values.flatten(2).gather(2, drawn.expand(n, values.shape[1], count))  # [N, C or 1, count]
        return picked.expand(n, c, count).permute(1, 0, 2).reshape(c, n * count)

    everywhere = torch.ones(n, 1, 1, 1, dtype=torch.bool, device=drawn.device).expand(n, 1, *logits.shape[2:])
    mask = gather(valid.bool() if valid is not None else everywhere)
    return gather(logits.float()), gather((target >= 0.5).float()), mask


def fit_platt(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    steps: int = 50,
    init_b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Platt scaling per channel: a, b minimising the mean negative log-likelihood of
    p = sigmoid(a * logit + b) over the masked pixels,

        NLL_c(a, b) = mean over k with mask[c, k] of BCE(a * logits[c, k] + b, targets[c, k]),

    with torch.optim.LBFGS (strong Wolfe line search, at most ``steps`` iterations) on the device of
    the inputs, in float64, starting at a = 1, b = init_b (default 0). The channels are fitted together
    (the summed objective separates, so each channel reaches its own minimum).

    Rule for degenerate channels: a channel with no masked pixels, or whose masked targets are all
    positive or all negative (the likelihood has no finite maximum), is not fitted and keeps a = 1,
    b = init_b (or 0).

    logits, targets, mask [C, K] (targets 0/1, e.g. from :func:`sample_pixels`); init_b (C,) or None.
    Returns a (C,), b (C,) float64 on CPU.
    """
    c, device = logits.shape[0], logits.device
    m = mask.bool()
    x = torch.where(m, logits.double(), 0.0)  # masked-out pixels zeroed so that nothing there can reach a gradient
    y = torch.where(m, targets.double(), 0.0)
    pixels = m.sum(1).double()
    positives = y.sum(1)
    fitted = (positives > 0) & (positives < pixels)
    start = torch.zeros(c, dtype=torch.float64) if init_b is None else init_b.detach().double().flatten().cpu()
    a = torch.ones(c, dtype=torch.float64, device=device, requires_grad=True)
    b = start.to(device).clone().requires_grad_(True)
    share = torch.where(fitted, 1.0 / pixels.clamp(min=1), torch.zeros_like(pixels)).unsqueeze(1)
    optimizer = torch.optim.LBFGS(
        [a, b], lr=1.0, max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        nll = F.binary_cross_entropy_with_logits(a.unsqueeze(1) * x + b.unsqueeze(1), y, reduction="none")
        loss = (nll * m * share).sum()
        loss.backward()
        return loss

    if bool(fitted.any()):
        optimizer.step(closure)
    fitted_cpu = fitted.cpu()
    a_out = torch.where(fitted_cpu, a.detach().cpu(), torch.ones(c, dtype=torch.float64))
    b_out = torch.where(fitted_cpu, b.detach().cpu(), start)
    return a_out, b_out
