"""Tests for seg/console.py: the console commands pyproject.toml declares are the apps of scripts/*.py, with
their --help, exit codes and recorded command. (tests/test_packaging.py runs an installed seg-train.)"""

import re
import sys

import pytest
from conftest import REPO

from seg import console, provenance

COMMANDS = {  # console command -> (function in seg.console, the app, the script of the checkout)
    "seg-train": ("train", "train", "train.py"),
    "seg-audit": ("audit", "audit", "audit_masks.py"),
    "seg-evaluate": ("evaluate", "evaluate", "evaluate.py"),
    "seg-compare": ("compare", "compare", "compare.py"),
    "seg-benchmark": ("benchmark", "benchmark", "benchmark.py"),
}


@pytest.fixture(autouse=True)
def _restore_command(monkeypatch):
    monkeypatch.setattr(provenance, "_COMMAND", provenance._COMMAND)


def test_pyproject_declares_one_command_per_script():
    section = (REPO / "pyproject.toml").read_text().split("\n[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    scripts = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, flags=re.M))  # tomllib: Python 3.11+ only
    assert scripts == {command: f"seg.console:{function}" for command, (function, _, _) in COMMANDS.items()}
    for _, app, script in COMMANDS.values():
        assert f"from seg.apps.{app} import main" in (REPO / "scripts" / script).read_text()  # the same command


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_the_command_is_recorded(command, monkeypatch, capsys):
    function, _, script = COMMANDS[command]
    monkeypatch.setattr(sys, "argv", [f"/somewhere/bin/{command}", "--help"])
    assert getattr(console, function)() == 0
    assert capsys.readouterr().out.startswith(f"usage: {script}")
    assert provenance.command_line() == f"{command} --help"


def test_a_bad_option_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["seg-train", "--config"])
    assert console.train() == 2
    err = capsys.readouterr().err
    assert err == "error: train.py: argument --config: expected one argument (see --help)\n"
