"""Tests for seg/benchmarks/step_overhead.py: the table of run("tiny") (every strategy and term, a result on
every row) and its agreement checks; the batch it times. Timings are never checked."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from benchmark_tables import table_rows

from seg.benchmarks import step_overhead
from seg.weighting.border import border_weight_map, connected_instances


def test_tiny_run_has_a_row_with_a_result_for_every_strategy_and_term():
    lines = step_overhead.run("tiny")
    rows = table_rows(lines)
    methods = [cells[0] for cells in rows]
    for channels in step_overhead.CHANNELS:
        assert f"whole step, resnet18, C={channels}" in methods
        for name in step_overhead.STRATEGY_LIMITS:
            assert f"weighting {name} (bce), C={channels}" in methods
        for name in step_overhead.TERM_LIMITS:
            assert {f"{name} alone, C={channels}", f"bce + {name}, C={channels}"} <= set(methods)
    judged = {cells[0]: cells[4] for cells in rows if cells[4]}
    assert judged["weighting per_batch (bce), C=5"] == "<= 3%" and judged["weighting border_map (bce), C=1"] == "<= 10%"
    assert judged["focal alone, C=1"] == "<= 5%" and "lovasz alone, C=1" not in judged
    # the agreement: the whole step's loss (weighting none) is an independent masked mean BCE, for C = 1 and 5
    assert "equals an independent masked mean BCE (ratio 1.0000000, 1.0000000)" in lines[0]


def test_the_whole_step_loss_is_the_masked_mean_bce():
    size = step_overhead.Size(("resnet18",), 2, 64, 1, 1)
    _, losses, agreement = step_overhead.measure(2, size)
    assert agreement == pytest.approx(1.0, abs=1e-6)
    assert set(losses) == {*step_overhead.STRATEGY_LIMITS, *step_overhead.TERM_LIMITS, "plain"} | {
        f"bce+{name}" for name in step_overhead.TERM_LIMITS
    }


def test_the_batch_is_what_the_dataset_gives_with_border_maps():
    batch = step_overhead.make_batch(5, 2, 64)
    target, valid = batch["target"], batch["valid"]
    assert target.shape == (2, 5, 64, 64) and valid.shape == (2, 1, 64, 64) and valid.dtype == torch.bool
    assert batch["image"].shape == (2, 3, 64, 64) and batch["weight_map"].shape == (2, 1, 64, 64)
    assert set(target.unique().tolist()) == {0.0, 1.0}
    fractions = target.mean(dim=(0, 2, 3))  # the rarer a channel, the fewer its positives
    assert fractions.tolist() == pytest.approx(step_overhead.FRACTIONS, abs=1e-3)
    assert not valid[1, :, 56:].any() and valid[0].all()  # the last image's bottom eighth is padding
    expected = border_weight_map(connected_instances(target[1, 0].numpy() > 0))
    np.testing.assert_array_equal(batch["weight_map"][1, 0].numpy(), expected)


def test_a_variant_without_a_finite_gradient_is_refused():
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    last: dict = {}

    def nan_loss() -> None:
        last["loss"] = torch.tensor(float("nan"))

    def constant() -> None:
        logits.grad = None
        loss = (logits * 0).sum()
        loss.backward()
        last["loss"] = loss.detach()

    def bce() -> None:
        logits.grad = None
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        loss.backward()
        last["loss"] = loss.detach()

    step_overhead.check_variants({"bce": bce}, logits, last)
    with pytest.raises(RuntimeError, match="nan: non-finite loss"):
        step_overhead.check_variants({"nan": nan_loss}, logits, last)
    with pytest.raises(RuntimeError, match="constant: no finite, non-zero gradient"):
        step_overhead.check_variants({"constant": constant}, logits, last)
