"""Tests for seg/apps/benchmark.py: the Markdown it prints around each section, --only, the recorded command.

The real sections take 6 s (audit) to 90 s (metrics) even with --quick on 2 CPU cores, so the layout
is pinned with a section module written here (a section is any module with NAME, TARGET and run);
the real sections are checked for that interface only.
"""

import importlib
import sys
import types

import pytest
import torch

from seg import provenance
from seg.apps import benchmark as benchmark_app
from seg.benchmarks import SECTIONS, gpu
from seg.cli import run_main


@pytest.fixture
def tiny_section(monkeypatch):
    """seg.benchmarks.tiny: a section that records the size it was run with."""
    section = types.ModuleType("seg.benchmarks.tiny")
    section.NAME, section.TARGET, section.calls = "tiny", "tiny >= 1x, always", []

    def run(size):
        section.calls.append(size)
        return ["| a | b |", "|---|---|", "| 1 | PASS |"]

    section.run = run
    monkeypatch.setitem(sys.modules, "seg.benchmarks.tiny", section)
    monkeypatch.setattr(benchmark_app, "SECTIONS", [*SECTIONS, "tiny"])  # the choices of --only
    return section


def test_only_one_section_prints_its_markdown_with_the_target_line(tiny_section, capsys):
    assert benchmark_app.main(["--quick", "--only", "tiny"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[:2] == ["# Benchmarks", ""]
    assert lines[2].startswith("Machine: ") and "; quick sizes. Ratios are measured side by side" in lines[2]
    assert lines[3:] == [
        "",
        "## tiny",
        "",
        "Target: tiny >= 1x, always",
        "",
        "| a | b |",
        "|---|---|",
        "| 1 | PASS |",
        "",  # a blank line after each section
        "",
    ]
    assert tiny_section.calls == ["quick"]
    assert benchmark_app.main(["--only", "tiny", "tiny"]) == 0  # full sizes; a section named twice runs twice
    assert "; full sizes." in capsys.readouterr().out and tiny_section.calls == ["quick", "full", "full"]
    assert benchmark_app.main(["--tiny", "--only", "tiny"]) == 0  # the size the section tests use
    assert "; tiny sizes." in capsys.readouterr().out and tiny_section.calls[-1] == "tiny"


def test_an_unknown_section_is_one_line_exit_2(capsys):
    assert run_main(benchmark_app.main, ["--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: benchmark.py: argument --only: invalid choice: 'nope'")


def test_help_exits_0_and_records_scripts_benchmark_py(monkeypatch, capsys):
    monkeypatch.setattr(provenance, "_COMMAND", provenance._COMMAND)
    assert run_main(benchmark_app.main, ["--help"]) == 0
    assert "--only" in capsys.readouterr().out
    assert provenance.command_line() == "python scripts/benchmark.py --help"


def test_every_section_has_a_name_a_one_line_target_and_run():
    for name in SECTIONS:
        section = importlib.import_module(f"seg.benchmarks.{name}")
        assert section.NAME == name and callable(section.run)
        assert isinstance(section.TARGET, str) and section.TARGET and "\n" not in section.TARGET


def test_without_cuda_the_gpu_section_prints_its_placeholder_last(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert SECTIONS[-1] == "gpu"  # a run of every section ends with it
    assert benchmark_app.main(["--only", "gpu"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[3:8] == ["", "## gpu", "", f"Target: {gpu.TARGET}", ""]
    assert lines[8:] == [*gpu.PLACEHOLDER, "", ""]
