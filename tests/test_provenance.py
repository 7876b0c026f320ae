"""Tests for seg/provenance.py: the command as typed (quoted, script relative to the working directory), the
command recorded by run_main over sys.argv, the commit of the working directory's checkout (None outside one),
and the keys of the provenance block (what a written summary.json carries end to end is pinned in
tests/test_apps_train.py)."""

import platform
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from seg import provenance


@pytest.fixture
def restore_command(monkeypatch):
    """Put back the recorded command after the test (record_command sets a module global)."""
    monkeypatch.setattr(provenance, "_COMMAND", provenance._COMMAND)


def test_command_line_quotes_arguments_and_makes_the_script_relative_to_the_working_directory(monkeypatch):
    monkeypatch.chdir(REPO)
    script = str(REPO / "scripts" / "train.py")
    argv = [script, "--config", "configs/my run.yaml", "--set", "run.name=it's", "$HOME"]
    assert provenance.command_line(argv) == (
        "python scripts/train.py --config 'configs/my run.yaml' --set 'run.name=it'\"'\"'s' '$HOME'"
    )
    assert provenance.command_line(["/opt/tools/train.py", "-x"]) == "python /opt/tools/train.py -x"  # outside the repo
    assert provenance.command_line(["/usr/bin/seg-train", "--a"]) == "/usr/bin/seg-train --a"  # not a .py: no python
    assert provenance.command_line([]) == ""
    monkeypatch.chdir(REPO / "scripts")
    assert provenance.command_line([script]) == "python train.py"
    assert provenance.command_line(["scripts/train.py"]) == "python scripts/train.py"  # an app's SCRIPT, as typed


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="a copy of the tree without .git (a GPU machine's)")
def test_commit_is_the_working_directory_checkouts_and_none_outside_any(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO / "seg")  # inside the checkout: its commit
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert provenance.git_state()["commit"] == head.stdout.strip()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git looks no higher than tmp_path
    monkeypatch.chdir(tmp_path)
    assert provenance.git_state() == {"commit": None, "dirty": None}
    block = provenance.provenance("cpu", argv=["/usr/bin/seg-train", "--config", "my.yaml"])
    assert block["commit"] is None and block["command"] == "/usr/bin/seg-train --config my.yaml"


def test_record_command_overrides_sys_argv(monkeypatch, restore_command):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/pytest", "-q"])
    monkeypatch.setattr(provenance, "_COMMAND", None)
    assert provenance.command_line() == "/usr/lib/python3/pytest -q"  # nothing recorded: sys.argv
    argv = [str(REPO / "scripts" / "evaluate.py"), "--run", "runs/a b"]
    provenance.record_command(argv)
    argv.append("--later")  # a copy was recorded
    assert provenance.command_line() == "python scripts/evaluate.py --run 'runs/a b'"
    assert provenance.provenance()["command"] == "python scripts/evaluate.py --run 'runs/a b'"
    assert provenance.provenance(argv=["x.py"])["command"] == "python x.py"  # an explicit argv wins


def test_provenance_block_keys_and_values(monkeypatch):
    monkeypatch.chdir(REPO)
    block = provenance.provenance("cpu", argv=[str(REPO / "scripts" / "train.py")])
    assert set(block) == {"commit", "dirty", "command", "versions", "device"}
    assert re.fullmatch(r"[0-9a-f]{40}", block["commit"]) and isinstance(block["dirty"], bool)  # a git checkout
    assert block["command"] == "python scripts/train.py"
    versions = block["versions"]
    assert set(versions) == {"python", *provenance.PACKAGES.values()}
    assert versions["python"] == platform.python_version() and versions["torch"] == torch.__version__
    assert versions["numpy"] == provenance.package_version("numpy") is not None
    device = block["device"]
    assert set(device) == {"type", "name", "cpu", "cpu_count", "torch_threads", "processes"}
    assert device["processes"] == 1
    assert device["type"] == "cpu" and device["name"] == device["cpu"] == provenance.cpu_model() != ""
    assert device["torch_threads"] == torch.get_num_threads() and device["cpu_count"] >= 1


def test_package_version_of_a_missing_distribution_is_none():
    assert provenance.package_version("surely-not-an-installed-distribution") is None


def test_outside_a_checkout_the_source_commit_names_where_a_copy_came_from(tmp_path, monkeypatch):
    """A tree copied to a GPU machine has no .git: SEG_SOURCE_COMMIT (40 hex digits) and SEG_SOURCE_DIRTY
    stand in; inside a checkout git's own answer wins."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.chdir(tmp_path)
    sha = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("SEG_SOURCE_COMMIT", sha)
    monkeypatch.setenv("SEG_SOURCE_DIRTY", "1")
    assert provenance.git_state() == {"commit": sha, "dirty": True}
    monkeypatch.setenv("SEG_SOURCE_DIRTY", "0")
    assert provenance.provenance("cpu")["commit"] == sha and provenance.provenance("cpu")["dirty"] is False
    for bad in ("HEAD", sha[:12], sha.upper()):  # not a full lower-case sha: not taken
        monkeypatch.setenv("SEG_SOURCE_COMMIT", bad)
        assert provenance.git_state() == {"commit": None, "dirty": None}
    if (REPO / ".git").exists():
        monkeypatch.setenv("SEG_SOURCE_COMMIT", sha)
        monkeypatch.chdir(REPO)
        assert provenance.git_state()["commit"] not in (None, sha)
