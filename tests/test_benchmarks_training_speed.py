"""Tests for seg/benchmarks/training_speed.py at tiny sizes: the table and the loss-curve agreement, never timings."""

import math

from seg.benchmarks import training_speed
from seg.benchmarks.timing import HEADER


def test_tiny_run_prints_every_lever_and_judges_the_loss_curves():
    lines = training_speed.run("tiny")
    start = lines.index(HEADER[0])
    assert lines[start + 1] == HEADER[1]
    rows = [line for line in lines[start + 2 :] if line.startswith("| ")]
    names = [v.name for v in training_speed.variants(with_compile=False)]
    assert [r.split(" | ")[0][2:] for r in rows[: len(names)]] == names  # one speed row per lever, default first
    assert rows[0].split(" | ")[3] == "1.00x default"
    curves = {r.split(" | ")[0][2:].split(":")[0]: r for r in rows if "loss curve" in r}
    assert set(curves) == set(names[1:])
    # float32 in another memory layout or thread count sets the tolerance (info); the other levers are judged by it
    assert curves["NCHW (channels_last off)"].endswith("| (info) |") and curves["one thread"].endswith("| (info) |")
    assert curves["train.amp_cpu (bfloat16 autocast)"].endswith(("| PASS |", "| MISS |"))
    assert lines[-1].startswith("Fastest float32 variant that keeps the loss curve: **")


def test_every_variant_trains_the_same_batches_from_the_same_model():
    chosen, first, spreads, difference, batch = training_speed.measure("tiny")
    assert batch == 2 and set(first) == set(spreads) == set(difference) == {v.name for v in chosen}
    assert difference[chosen[0].name] == 0.0  # the default against itself
    assert all(math.isfinite(d) for d in difference.values())
