"""The training step and the metric updates make no host synchronisation, for every weighting strategy and
loss term (tests/host_sync.py: CUDA's sync-debug mode on a GPU, its stand-in on the CPU); and the stand-in
itself fires on each kind of sync and on nothing else (else the check could pass by checking nothing).

Each case builds the criterion as training does (the packaged defaults with its ``loss`` section), a tiny
smp Unet, AdamW and the cosine schedule, takes one warm-up step, then three :func:`seg.engine.train_step`
calls, ``confusion_counts`` and a validation ``Evaluator.update`` inside the check. The forward runs in bfloat16
autocast on channels_last (train.amp on CUDA, train.amp_cpu on the CPU), and the loss must come out in float32.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from host_sync import HostSync, no_host_sync

from seg.config import BASE_CONFIG, MaskSpec, deep_merge, read_yaml, validate
from seg.data.counts import MaskCounts
from seg.data.dataset import pad_collate
from seg.engine import EpochState, StepOptions, autocast, effective_weights, to_device, train_step
from seg.losses import Criterion, lovasz_hinge
from seg.models import build_model
from seg.schedule import cosine, first_segment
from seg.scoring.metrics import confusion_counts, slot_counts
from seg.scoring.thresholds import log_q
from seg.scoring.validation import Evaluator
from seg.weighting.border import border_weight_map, connected_instances
from seg.weighting.registry import Strategy, build_strategy, strategy_for

SIZES = {"cpu": 32, "cuda": 128}  # a depth-5 Unet's smallest input; on CUDA, Lovász sorts rows over 4096 (large sort)
BATCH = 2
CHECKED_STEPS = 3
SPECS = {
    "binary": MaskSpec("binary", ("fg",), positive_values=(255,)),
    "multilabel": MaskSpec("multilabel", ("a", "b", "c")),
    "index": MaskSpec("index", ("a", "b", "c"), ignore_index=255),
}
DEVICES = [
    "cpu",
    pytest.param(  # scripts/gpu_visit.sh check runs it (pytest -m cuda)
        "cuda", marks=pytest.mark.cuda
    ),
]


@dataclass(frozen=True)
class Case:
    weighting: str
    fmt: str
    terms: tuple[dict, ...] = ({"name": "bce"},)
    loss: dict = field(default_factory=dict)  # the other keys of the loss section

    @property
    def id(self) -> str:
        terms = "+".join(t["name"] + ("-" + t["form"] if "form" in t else "") for t in self.terms)
        extra = "-".join(f"{k}={v}" for k, v in self.loss.items() if k != "border")
        return "-".join(part for part in (self.weighting, self.fmt, terms, extra) if part)


# Every strategy at C = 1 (binary) and C = 3 (multilabel or index masks with ignored pixels); every loss term,
# both forms of the region and Lovász terms, focal's fixed alpha, apply_as weight, normalize, the EMA.
CASES = [
    Case("none", "binary"),
    Case("none", "index", ({"name": "focal", "alpha": 0.25}, {"name": "dice", "form": "per_image"})),
    Case("global", "binary", ({"name": "bce"}, {"name": "dice"})),
    Case("global", "multilabel", ({"name": "focal"},), {"apply_as": "weight", "normalize": True}),
    Case("per_channel", "multilabel", ({"name": "bce"}, {"name": "lovasz", "form": "per_image"})),
    Case("per_channel", "binary", ({"name": "focal"}, {"name": "tversky"}), {"apply_as": "weight"}),
    Case(
        "per_batch",
        "multilabel",
        ({"name": "bce"}, {"name": "tversky", "form": "per_image", "gamma": 0.75}),
        {"ema": 0.9, "negatives": "all_zero"},
    ),
    Case("per_batch", "binary", ({"name": "bce"}, {"name": "lovasz"}), {"apply_as": "weight", "normalize": True}),
    Case("class_map", "binary"),
    Case("class_map", "index", ({"name": "focal"}, {"name": "dice"}), {"apply_as": "weight"}),
    Case("class_map", "multilabel", ({"name": "bce"}, {"name": "tversky"}), {"normalize": True}),
    Case("border_map", "binary", ({"name": "bce"}, {"name": "dice"}), {"border": {"instances_from": "positive"}}),
    Case(
        "border_map",
        "multilabel",
        tuple({"name": name} for name in ("bce", "focal", "dice", "tversky", "lovasz")),
        {"apply_as": "weight"},
    ),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the tiny CPU steps run 2-5x slower with two threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ the CPU stand-in itself


def _x() -> torch.Tensor:
    return torch.tensor([[-1.0, 2.0, 0.0], [3.0, -4.0, 5.0]])


SYNCS = {
    "item": lambda x: x.sum().item(),
    "float": lambda x: float(x.sum()),
    "bool": lambda x: bool(x.sum() > 0),
    "if": lambda x: 1 if (x > 0).any() else 0,
    "nonzero": lambda x: x.nonzero(),
    "where(condition)": lambda x: torch.where(x > 0),
    "boolean mask": lambda x: x[x > 0],
    "boolean mask assignment": lambda x: x.__setitem__(x > 0, 0.0),
    "masked_select": lambda x: x.masked_select(x > 0),
    "unique": lambda x: torch.unique(x),
    "bincount": lambda x: torch.bincount(x.long().clamp(min=0).flatten(), minlength=8),
    "repeat_interleave": lambda x: torch.repeat_interleave(torch.tensor([1, 2])),
    "equal": lambda x: torch.equal(x, x),
    "tolist": lambda x: x.tolist(),
    "numpy": lambda x: x.numpy(),
    "cpu": lambda x: x.cpu(),
}
DEVICE_WORK = {
    "arithmetic": lambda x: (x * 2 + 1).exp().sum(dim=0),
    "where": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "scatter_add": lambda x: torch.zeros(8, dtype=torch.long).scatter_add_(
        0, x.long().clamp(0, 7).flatten(), torch.ones(6, dtype=torch.long)
    ),
    "integer index": lambda x: x[:, torch.tensor([2, 0])],
    "sort and gather": lambda x: x.gather(1, x.sort(dim=1).indices),
    "masked_fill": lambda x: x.masked_fill(x > 0, 0.0),
    "repeat_interleave with output_size": lambda x: torch.repeat_interleave(torch.tensor([1, 2]), output_size=3),
    "slot_counts (bincount on the CPU, a scatter on CUDA)": lambda x: slot_counts(x.long().clamp(0, 7).flatten(), 8),
}


@pytest.mark.parametrize("name", SYNCS)
def test_the_cpu_stand_in_fires_at_each_kind_of_sync(name):
    x = _x()
    with pytest.raises(HostSync, match="host synchronisation"), no_host_sync("cpu"):
        SYNCS[name](x)


@pytest.mark.parametrize("name", DEVICE_WORK)
def test_the_cpu_stand_in_lets_device_work_through(name):
    x = _x()
    with no_host_sync("cpu"):
        DEVICE_WORK[name](x)


def test_the_optimizer_step_is_exempt_and_nothing_else():
    """AdamW reads its CPU step count with .item() (no CUDA sync): flagged unless exempted, and only then."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight])
    weight.grad = torch.ones(3)
    with pytest.raises(HostSync), no_host_sync("cpu"):
        optimizer.step()
    with no_host_sync("cpu", optimizer):
        optimizer.step()
        with pytest.raises(HostSync):
            weight.sum().item()  # after the step: checked again


class _HostReadWeight(Strategy):
    """A weight computed on the host from the batch: the kind of sync the check must find inside a step."""

    def __init__(self) -> None:
        torch.nn.Module.__init__(self)

    def batch_weight(self, batch: dict) -> torch.Tensor:
        return torch.tensor(1.0 + float(batch["target"].mean()))


def test_the_check_finds_a_sync_inside_train_step():
    net = torch.nn.Conv2d(3, 1, kernel_size=1)
    optimizer = torch.optim.AdamW(net.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    options = StepOptions(torch.device("cpu"), channels_last=False, progress=False)
    batch = {"image": torch.randn(2, 3, 4, 4), "target": torch.ones(2, 1, 4, 4), "valid": torch.ones(2, 1, 4, 4) > 0}
    state = EpochState.start(options.device, 1)
    with pytest.raises(HostSync, match="_local_scalar_dense"), no_host_sync("cpu", optimizer):
        train_step(net, batch, optimizer, scheduler, Criterion(_HostReadWeight()), options, state)


def test_the_check_finds_lovasz_label_check_which_training_skips():
    """lovasz_hinge's soft-label check is one host sync: training's criterion passes check_labels=False."""
    logits, target = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    with pytest.raises(HostSync, match="_local_scalar_dense"), no_host_sync("cpu"):
        lovasz_hinge(logits, target)
    with no_host_sync("cpu"):
        lovasz_hinge(logits, target, check_labels=False)


# ------------------------------------------------------------------------------ the training step


def _items(case: Case, seed: int, size: int) -> list[dict]:
    """Dataset items (as SegmentationDataset gives them) of ``case``'s mask format, ``weight_map`` for border_map."""
    spec = SPECS[case.fmt]
    rng = np.random.default_rng(seed)
    items = []
    for i in range(BATCH):
        shape = (size, size)
        if case.fmt == "index":
            plane = rng.integers(0, spec.num_classes, size=shape)
            plane[rng.random(shape) < 0.1] = 255  # ignored pixels
            target = (plane[..., None] == np.arange(spec.num_classes)).astype(np.uint8)
            valid = plane != 255
        else:
            target = (rng.random((*shape, spec.num_classes)) < 0.3).astype(np.uint8)
            valid = np.ones(shape, dtype=bool)
        item = {
            "image": torch.from_numpy(rng.standard_normal((3, *shape)).astype(np.float32)),
            "target": torch.from_numpy(target.transpose(2, 0, 1).astype(np.float32)),
            "valid": torch.from_numpy(valid[None]),
            "index": seed * BATCH + i,
        }
        if case.weighting == "border_map":  # the data-side border term, from the positive pixels' components
            instances = connected_instances(target.max(axis=-1) > 0, 4)
            item["weight_map"] = torch.from_numpy(border_weight_map(instances, 10.0, 5.0)[None].astype(np.float32))
        items.append(item)
    return items


def _config(case: Case):
    """The packaged defaults with ``case``'s loss section, validated (``Config``)."""
    loss = {"weighting": case.weighting, "terms": list(case.terms), **case.loss}
    return validate(deep_merge(read_yaml(BASE_CONFIG), {"loss": loss}), "test_host_sync")


def _criterion(case: Case, batches: list[dict]) -> Criterion:
    """The criterion as training builds it (seg.training.build_criterion), from the batches' counts."""
    spec, loss = SPECS[case.fmt], _config(case).loss
    strategy_for(loss).check_config(loss, spec.fmt)  # a case training would accept
    counts = MaskCounts(spec.num_classes)
    for batch in batches:
        for target, valid in zip(batch["target"], batch["valid"], strict=True):
            counts.add(target.permute(1, 2, 0).numpy().astype(np.uint8), valid[0].numpy())
    return Criterion(build_strategy(loss, counts, spec), loss.apply_as, loss.normalize, loss.terms)


@functools.cache
def _unet(channels: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("Unet", "resnet18", None, channels)


@torch.no_grad()
def _validation_batch(model: torch.nn.Module, batch: dict, evaluator: Evaluator, options: StepOptions) -> torch.Tensor:
    """What seg.engine.evaluate does with one batch, and confusion_counts of its logits (int64 [N,C,4])."""
    model.eval()
    batch = to_device(batch, options)
    with autocast(options):
        logits = model(batch["image"])
    evaluator.update(logits.float(), batch["target"], batch["valid"], batch["index"])
    return confusion_counts(logits.float(), batch["target"], batch["valid"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_training_steps_and_metric_updates_make_no_host_sync(case, device):
    device = torch.device(device)
    channels, config = SPECS[case.fmt].num_classes, _config(case)
    batches = [pad_collate(_items(case, seed, SIZES[device.type])) for seed in range(CHECKED_STEPS + 2)]
    criterion = _criterion(case, batches).to(device)
    model = copy.deepcopy(_unet(channels)).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    scheduler = cosine(optimizer, first_segment(2, config.train.lr)[0], steps_per_epoch=CHECKED_STEPS + 1)
    logged: list = []
    options = StepOptions(  # bfloat16 autocast (train.amp on CUDA, train.amp_cpu on the CPU), channels_last
        device, amp=True, amp_cpu=True, progress=False, log_every=2, on_log=lambda *a: logged.append(a)
    )
    logits_dtypes: list[torch.dtype] = []
    model.register_forward_hook(lambda module, args, output: logits_dtypes.append(output.dtype))
    state = EpochState.start(device, len(criterion.terms))
    model.train()
    train_step(model, batches[0], optimizer, scheduler, criterion, options, state)  # warm-up: lazy initialisation
    shift = log_q(effective_weights(state.sums, channels))  # as training's validation; Platt pixels as evaluation's
    metrics = config.metrics
    evaluator = Evaluator.from_config(metrics, channels, device, shift, calibration_pixels=metrics.calibration_pixels)
    _validation_batch(model, batches[0], evaluator, options)  # warm-up
    losses = []

    model.train()
    with no_host_sync(device, optimizer):
        for batch in batches[1 : CHECKED_STEPS + 1]:
            losses.append(train_step(model, batch, optimizer, scheduler, criterion, options, state))
        counts = _validation_batch(model, batches[-1], evaluator, options)

    # outside the window: what the epoch loop reads at its intervals
    assert state.steps == CHECKED_STEPS + 1 and logged == []  # train_step never logs: the epoch loop does
    assert int(state.first_bad) == -1 and all(bool(torch.isfinite(loss)) for loss in losses)
    assert int(counts.sum()) == int(batches[-1]["valid"].sum()) * channels
    assert evaluator.seen == 2 * BATCH
    assert set(logits_dtypes) == {torch.bfloat16}  # the forward in bfloat16, the loss in float32
    assert all(loss.dtype == torch.float32 for loss in losses)
