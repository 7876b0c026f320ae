"""Tests for seg/benchmarks/training_loop.py: the table of run("tiny") and its agreement check (the project's
first epoch and the plain loop's have the same mean loss); the batches both loops run. Timings are never
checked."""

import pytest
import torch
from benchmark_tables import table_rows

from seg.benchmarks import training_loop


def test_tiny_run_compares_the_two_loops_and_checks_their_losses_agree():
    lines = training_loop.run("tiny")
    plain, project, paired = table_rows(lines)
    assert plain[0].startswith("plain loop") and plain[2:] == [plain[2], "1.00", "", "(info)"]
    assert project[0].startswith("seg.engine.train_one_epoch") and project[4] == ">= 0.97"
    assert project[1].endswith(" images/s") and project[3].split(" (medians: ")[1].endswith(")")
    # the judged ratio is the median of the round-by-round ratios, the last row
    assert paired[0] == "train_one_epoch / plain loop, round by round" and paired[5] == "(info)"
    assert paired[1] == project[3].split()[0] + " x"
    assert "the two first epochs' mean losses agree within 0.0001 relative" in lines[0]


def test_the_loops_disagree_beyond_the_tolerance_is_refused():
    assert training_loop.check_agreement(0.5, 0.5) == 0.0
    assert training_loop.check_agreement(0.50001, 0.5) == pytest.approx(2e-5)
    with pytest.raises(RuntimeError, match="first epoch's mean loss"):
        training_loop.check_agreement(0.501, 0.5)


def test_the_batches_come_from_the_dataset_every_pixel_valid(tmp_path):
    size = training_loop.Size("resnet18", 2, 64, 3, 1)
    batches, dataset = training_loop.make_batches(tmp_path, size)
    assert len(batches) == 3 and len(dataset) == 6 and dataset.spec.fmt == "binary"
    for batch in batches:
        assert batch["image"].shape == (2, 3, 64, 64) and batch["target"].shape == (2, 1, 64, 64)
        assert batch["valid"].all()  # crops of 96 px images: no padding, so the masked mean is the plain mean
        assert set(batch["target"].unique().tolist()) <= {0.0, 1.0} and batch["target"].any()
    assert torch.equal(batches[0]["index"], torch.tensor([0, 1]))
