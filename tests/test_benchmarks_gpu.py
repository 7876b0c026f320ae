"""Tests for seg/benchmarks/gpu.py: the table of run("tiny") on the CPU (every measurement's rows, a result on
every row) and its agreement checks (the project's loop and the plain loop have the same first-step loss on the
same batch); the placeholder without a CUDA device; the step window, the time limit and the compile rows'
failure paths. Timings are never checked. On a machine with CUDA, the tiny plan runs on the GPU too."""

import dataclasses
import time

import pytest
import torch
from benchmark_tables import table_rows

from seg.benchmarks import gpu, step_overhead, timing
from seg.benchmarks.criteria import project_criterion
from seg.config import MaskSpec
from seg.data.counts import MaskCounts
from seg.engine import StepOptions


def check_table(lines: list[str]) -> list[list[str]]:
    """The rows of every measurement in order, their targets, and the checks the paragraph reports."""
    rows = table_rows(lines)
    methods = [cells[0] for cells in rows]
    assert methods[0].startswith("plain loop") and methods[1].startswith("seg.engine.train_one_epoch")
    assert methods[2] == "train_one_epoch / plain loop, round by round"
    assert methods[3] == "first-step loss, train_one_epoch vs plain loop (relative difference)"
    assert rows[3][4] == "<= 0.0001" and rows[3][5] == "PASS"  # a MISS row on a GPU; on the CPU it raises
    del methods[3], rows[3]
    assert methods[3].startswith("metric update per step") and methods[4].startswith("validation update")
    assert methods[5].startswith("train_one_epoch, batches resident on the")
    assert methods[6].startswith("train_one_epoch over training's loader (num_workers ")
    assert methods[7].startswith("the same with pin_memory ") and methods[8] == "the same with data.keep_decoded"
    for channels in step_overhead.CHANNELS:
        assert any(m.startswith("whole step, resnet18 (") and m.endswith(f", C={channels}") for m in methods)
        for name in step_overhead.STRATEGY_LIMITS:
            assert f"weighting {name} (bce), C={channels}" in methods
    assert methods[-3:] == [
        "train_one_epoch, eager (the rows above)",
        "train_one_epoch, torch.compile(model) (eager, default mode)",
        "torch.compile(model) (eager, default mode): compile time (first step - median step)",
    ]
    judged = {cells[0]: cells[4] for cells in rows if cells[4]}
    assert judged[methods[1]] == ">= 0.95" and judged[methods[3]] == "<= 1%" and judged[methods[6]] == ">= 90%"
    assert judged["weighting border_map (bce), C=5"] == "<= 10%" and judged["focal alone, C=1"] == "<= 5%"
    assert "busy" in rows[6][3] and rows[5][3] == "100% busy"
    # every run raises unless the two loops' first-step losses agree and the running count holds every pixel
    assert "first-step losses on the same batch agree within 0.0001 relative" in lines[0]
    assert "running count holds every valid pixel once per update" in lines[0]
    assert "Compile: compiled in " in lines[0]
    return rows


def test_tiny_run_on_the_cpu_has_every_measurement_and_checks_the_loops_agree():
    lines = gpu.run("tiny")
    check_table(lines)
    assert lines[0].startswith("Device: cpu (") and "(here 0.0e+00)" in lines[0]  # float32: the same loss


@pytest.mark.cuda
def test_tiny_plan_on_cuda_has_every_measurement():
    lines = gpu.report(gpu.PLANS["tiny"], torch.device("cuda"))
    check_table(lines)
    assert lines[0].startswith(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}, CUDA ")


def test_without_cuda_the_gpu_sizes_give_the_placeholder(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for size in ("full", "quick"):
        lines = gpu.run(size)
        assert lines == gpu.PLACEHOLDER and lines[0].startswith("Not measured on this machine (no CUDA device).")
    full = gpu.PLANS["full"]  # the numbers
    assert (full.device, full.encoder, full.batch, full.side, full.compile_backend) == (
        "cuda",
        "resnet34",
        16,
        512,
        "inductor",
    )


def test_a_window_times_the_steps_from_skip_to_the_end():
    window = gpu.Window([0, 1, 2, 3], 2, torch.device("cpu"))
    assert len(window) == 4
    start = time.perf_counter()
    for step in window:
        if step == 1:
            time.sleep(0.2)  # before the window
        if step >= 2:
            time.sleep(0.05)
    assert 0.1 <= window.seconds() < time.perf_counter() - start - 0.2


def test_time_limit_stops_a_block_that_runs_too_long():
    with pytest.raises(TimeoutError, match="stopped after"), gpu.time_limit(0.05):
        time.sleep(1)
    with gpu.time_limit(5):  # a block within its limit; the timer is off after it
        pass
    time.sleep(0.01)


def tiny_compile_inputs():
    """A bench on the CPU, a 1x1 convolution as the model, its loop and one resident batch."""
    options = StepOptions(torch.device("cpu"), progress=False)
    bench = gpu.Bench(gpu.PLANS["tiny"], torch.device("cpu"), options, None)
    criterion = project_criterion("none", ["bce"], MaskCounts(1), MaskSpec("binary", ("c",), (255,)))
    model = torch.nn.Conv2d(3, 1, 1)
    batch = {
        "image": torch.randn(2, 3, 8, 8),
        "target": (torch.rand(2, 1, 8, 8) > 0.5).float(),
        "valid": torch.ones(2, 1, 8, 8, dtype=torch.bool),
    }
    return bench, model, gpu.Loop(model, criterion, options), [batch, batch]


def test_a_compile_that_fails_or_finds_no_time_left_is_reported_in_its_row():
    bench, model, loop, resident = tiny_compile_inputs()
    rows, note = gpu.measure_compile(bench, model, loop, resident, 60)
    assert table_rows(["x", "", *timing.HEADER, *rows])[2][0].endswith("compile time (first step - median step)")
    assert note.startswith("compiled in ")
    failing = dataclasses.replace(bench, plan=dataclasses.replace(bench.plan, compile_backend="no_such"))
    rows, note = gpu.measure_compile(failing, model, loop, resident, 60)
    (cells,) = table_rows(["x", "", *timing.HEADER, *rows])
    assert cells[0].startswith("torch.compile(model) (no_such, default mode): ") and cells[1:3] == ["-", "-"]
    assert note.startswith("failed (")
    rows, note = gpu.measure_compile(bench, model, loop, resident, 0)
    assert note == "not run" and "the section's time budget was spent" in rows[0]
