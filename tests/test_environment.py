"""The locked environment: requirements.lock pins pyproject.toml's dependencies exactly, within
their ranges; environment.yml installs from the lock; scripts/check_lock.py reports drift.

These tests read files only; whether *this* environment matches the lock is checked by
scripts/check_lock.py under `make test`, not here (the suite also runs with other torch builds).
"""

import re
import subprocess
import sys
from importlib import metadata

import pytest
import tomllib
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = REPO / "requirements.lock"
CHECK_LOCK = REPO / "scripts" / "check_lock.py"


def _lock_lines(path):
    """Requirement lines of a pip requirements file, comments and blank lines dropped."""
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def _pins(path):
    pins = {}
    for line in _lock_lines(path):
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def _wanted():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def test_lock_pins_every_package_exactly_and_not_the_project():
    lines = _lock_lines(LOCK)
    assert lines, "requirements.lock is empty"
    for line in lines:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*==[0-9][0-9A-Za-z.+!]*", line), (
            f"requirements.lock: not a plain exact pin: {line!r}"
        )
    names = [canonicalize_name(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names)), "a package is pinned twice"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    assert canonicalize_name(project) not in names, "the lock must not contain the project itself"
    header = [line for line in LOCK.read_text().splitlines()[:5] if line.startswith("#")]
    assert any("make lock" in line for line in header), "the header should say the lock comes from `make lock`"


def test_lock_pins_pyproject_dependencies_within_their_ranges():
    pins = _pins(LOCK)
    for req in _wanted():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not in requirements.lock: run make lock"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{req.name}=={pins[name]} in requirements.lock is outside pyproject.toml's {req.specifier}: run make lock"
        )


def test_lock_constraints_hold_in_the_lock():
    pins = _pins(LOCK)
    constraints = _pins(REPO / "lock-constraints.txt")
    assert {"torch", "torchvision"} <= constraints.keys()
    for name, version in constraints.items():
        assert pins.get(name) == version, f"{name}: lock-constraints.txt says {version}, the lock {pins.get(name)}"


def test_lock_includes_torch_cuda_dependencies():
    """Resolved for Linux x86_64: torch's nvidia-* wheels are pinned like everything else."""
    pins = _pins(LOCK)
    assert "triton" in pins
    assert any(name.startswith("nvidia-") for name in pins)


def test_environment_yml_installs_from_the_lock():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ["-r requirements.lock", "-e ."]


def _check(tmp_path, lock_text, *args):
    lock = tmp_path / "requirements.lock"
    lock.write_text(lock_text)
    return subprocess.run([sys.executable, str(CHECK_LOCK), "--lock", str(lock), *args], capture_output=True, text=True)


def test_check_lock_passes_when_versions_match(tmp_path):
    result = _check(
        tmp_path,
        f"# header\nPyYAML=={metadata.version('pyyaml')}\n    # via seg\npytest=={metadata.version('pytest')}\n",
    )
    assert result.returncode == 0, result.stderr
    assert "2 packages match" in result.stdout


def test_check_lock_names_each_mismatch_and_the_fix(tmp_path):
    result = _check(tmp_path, f"pytest=={metadata.version('pytest')}\npytest-nope-not-installed==1.0\npyyaml==0.0.1\n")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"check_lock: pyyaml: installed {metadata.version('pyyaml')}, locked 0.0.1" in lines
    assert "check_lock: pytest-nope-not-installed: not installed, locked 1.0" in lines
    assert not any(line.startswith("check_lock: pytest:") for line in lines)
    assert "make install" in lines[-1] and "rm -rf .venv && make test" in lines[-1]


@pytest.mark.parametrize("text", ["torch>=2\n", "-e .\nnumpy\n"])
def test_check_lock_refuses_a_lock_that_is_not_pinned(tmp_path, text):
    assert _check(tmp_path, text).returncode == 2


def test_check_lock_help():
    result = subprocess.run([sys.executable, str(CHECK_LOCK), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "requirements.lock" in result.stdout
