"""Tests for the package as pyproject.toml builds it: the wheel of this checkout, installed into a folder of its
own and run from a folder outside the checkout. The console command seg-train (the installed script), the
defaults shipped as package data, relative paths against the working directory, and the README's example of
"Use seg in your own training loop" (extracted from the README, so that the two cannot drift apart).

Nothing is downloaded: the build uses the project venv's setuptools (--no-build-isolation, --no-index) and
the installed seg imports its dependencies from the venv's site-packages (PYTHONPATH, after the install)."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

COMMANDS = ("seg-train", "seg-audit", "seg-evaluate", "seg-compare", "seg-benchmark")


def run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def readme_example() -> str:
    """The ```python block of the README section "Use seg in your own training loop"."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Use seg in your own training loop\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds one python example"
    return blocks[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel from a copy of the sources (the checkout gets no build/), install it with --target."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(REPO / "seg", source / "seg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip"]
    built = run([*pip, "wheel", ".", "--no-build-isolation", "--no-deps", "-w", str(tmp / "dist")], source, env)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp / "dist").glob("seg-*.whl"))
    site = tmp / "site"
    done = run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], tmp, env)
    assert done.returncode == 0, done.stdout + done.stderr
    work = tmp / "work"  # the working directory of every command: outside the checkout
    work.mkdir()
    venv_site = sysconfig.get_paths()["purelib"]  # the dependencies (torch, smp, ...)
    # ... or folders on PYTHONPATH (a GPU machine's wheels), never the checkout itself
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
    run_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), venv_site, *extra])}
    run_env.update(NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    return {"wheel": wheel, "site": site, "work": work, "env": run_env}


def test_the_wheel_holds_the_package_its_defaults_and_the_commands(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = wheel.namelist()
        entry_points = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "seg/config/base.yaml" in names and "seg/console.py" in names and "seg/__init__.py" in names
    assert not [n for n in names if n.startswith(("configs/", "tests/", "scripts/"))]
    for command in COMMANDS:
        assert re.search(rf"^{command} = seg\.console:\w+$", entry_points, flags=re.M), command
        assert (installed["site"] / "bin" / command).is_file()


def test_the_installed_command_runs_from_outside_the_checkout(installed):
    script = installed["site"] / "bin" / "seg-train"
    assert script.read_text().splitlines()[0] == f"#!{sys.executable}"  # pip's launcher for this interpreter
    done = run([str(script), "--help"], installed["work"], installed["env"])
    assert done.returncode == 0 and done.stdout.startswith("usage: train.py"), done.stderr
    assert "--config" in done.stdout and "--nproc" in done.stdout
    bad = run([str(script), "--config", "nope.yaml"], installed["work"], installed["env"])
    assert (bad.returncode, bad.stderr) == (2, "error: nope.yaml: config file not found\n")  # one line, exit 2


CHECK_INSTALLED = """
import json, sys
import seg
from seg.config import BASE_CONFIG, expand_path, load_config
torch_on_import = "torch" in sys.modules
cfg = load_config("my.yaml")
print(json.dumps({
    "seg": seg.__file__, "base": str(BASE_CONFIG), "torch_on_import": torch_on_import,
    "epochs": cfg.train.epochs, "clamp": list(cfg.loss.clamp), "weighting": cfg.loss.weighting,
    "root": str(expand_path(cfg.data.root)), "out": str(expand_path(cfg.run.out_dir)),
}))
"""


def test_the_installed_package_reads_its_packaged_defaults(installed):
    work, site = installed["work"], installed["site"].resolve()
    (work / "my.yaml").write_text("train: {epochs: 7}\n")  # only what differs; the rest from seg/config/base.yaml
    done = run([sys.executable, "-c", CHECK_INSTALLED], work, installed["env"])
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert Path(got["seg"]).resolve().is_relative_to(site)  # the installed seg, not the checkout's editable one
    assert Path(got["base"]).resolve() == site / "seg" / "config" / "base.yaml"
    assert got["torch_on_import"] is False
    assert got["epochs"] == 7 and got["clamp"] == [0.001, 1000.0] and got["weighting"] == "none"  # base.yaml's
    assert Path(got["root"]) == work.resolve() / "data" / "synthetic"  # relative to the working directory
    assert Path(got["out"]) == work.resolve() / "runs"


def test_the_readme_example_runs_against_the_installed_package(installed):
    work = installed["work"]
    example = readme_example() + "\nprint('seg from', seg.__file__)\n"
    (work / "example.py").write_text(example)
    done = run([sys.executable, "example.py"], work, installed["env"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Dice per channel: [") and "loss: " in lines[0]
    assert Path(lines[-1].removeprefix("seg from ")).resolve().is_relative_to(installed["site"].resolve())
