"""Tests for seg/__init__.py, the public API: every name in ``__all__`` is the function or class of its module,
loaded on first use (``import seg`` and the commands' modules import no torch), and no name is a submodule's."""

import importlib
import pkgutil
import subprocess
import sys

import pytest
from conftest import REPO

import seg


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return done.stdout.strip()


def test_import_seg_and_the_commands_import_no_torch():
    modules = "seg, seg.cli, seg.launch, seg.console, seg.apps.train, seg.apps.compare"
    assert run_python(f"import sys, {modules}; print('torch' in sys.modules)") == "False"
    # a public name loads its module (and torch) on first use
    assert run_python("import sys, seg; seg.dice_score; print('torch' in sys.modules)") == "True"


def test_no_public_name_is_a_submodule():
    submodules = {module.name for module in pkgutil.iter_modules(seg.__path__)}
    assert {"losses", "weighting", "scoring", "config", "training"} <= submodules
    assert not set(seg.__all__) & submodules


@pytest.mark.parametrize("name", seg.__all__)
def test_every_public_name_is_its_modules_object(name):
    value = getattr(seg, name)
    assert value.__module__.startswith("seg.") and getattr(importlib.import_module(value.__module__), name) is value
    assert name in dir(seg)


def test_unknown_names_are_refused_and_star_import_gives_all():
    assert sorted(seg.__all__) == seg.__all__
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        seg.nope  # noqa: B018 - the attribute access is the test
    namespace: dict = {}
    exec("from seg import *", namespace)
    assert set(seg.__all__) <= set(namespace)
