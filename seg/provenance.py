"""Where a result came from: code version, command, library versions and machine.

``provenance(device)`` is written into summary.json, eval-*.json, the comparison's
per-run records and the W&B config, so that every number can be traced back to the
commit (and whether the tree had uncommitted changes), the command that made it, the
exact versions of the libraries that computed it and the hardware it ran on. The commit is that of
the git checkout holding the working directory (None outside any checkout, e.g. an installed seg run
from a plain folder, unless SEG_SOURCE_COMMIT names the commit a copied tree came from); paths in the
command are relative to the working directory when inside it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

# distribution name on PyPI -> key in the provenance block
PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "segmentation-models-pytorch": "segmentation_models_pytorch",
    "timm": "timm",
    "albumentations": "albumentations",
    "opencv-python-headless": "opencv",
    "numpy": "numpy",
    "wandb": "wandb",
}


def _git(directory: str, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


SOURCE_COMMIT = "SEG_SOURCE_COMMIT"  # outside any checkout: the commit the files were copied from (40 hex digits)
SOURCE_DIRTY = "SEG_SOURCE_DIRTY"  # ... and "1" when that copy held uncommitted changes to tracked files


def git_state() -> dict:
    """{"commit": sha or None (the working directory is in no git checkout), "dirty": tracked files changed
    since the commit} of the checkout that holds the working directory. Outside any checkout (a copy of the
    tree sent to another machine, which has no .git), SEG_SOURCE_COMMIT and SEG_SOURCE_DIRTY say where the
    copy came from (scripts/gpu_bundle.py --commands writes them into the commands it prints)."""
    try:
        state = dict(_git_state(os.getcwd()))
    except OSError:  # the working directory was removed
        state = {"commit": None, "dirty": None}
    source = os.environ.get(SOURCE_COMMIT, "")
    if state["commit"] is None and len(source) == 40 and all(c in "0123456789abcdef" for c in source):
        state = {"commit": source, "dirty": os.environ.get(SOURCE_DIRTY) == "1"}
    return state


@lru_cache(maxsize=8)
def _git_state(directory: str) -> dict:
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def versions() -> dict:
    """Versions of python and of the libraries that compute the results (None where not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for distribution, key in PACKAGES.items():
        out[key] = package_version(distribution)
    import torch  # the build tag (e.g. 2.14.1+cu130: CUDA 13.0 wheel) says more than the package version

    out["torch"] = torch.__version__
    if out["opencv"] is None:  # another OpenCV build (e.g. opencv-python) provides cv2
        out["opencv"] = package_version("opencv-python")
    return out


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: str = "cpu") -> dict:
    """{"type", "name" (GPU name or CPU model), "cpu", "cpu_count", "torch_threads", "processes" (of the DDP
    job: 1 for one process)} for ``device``."""
    import torch
    import torch.distributed as dist

    out = {
        "type": str(device).split(":")[0],
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processes": dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1,
    }
    if out["type"] == "cuda" and torch.cuda.is_available():
        out["name"] = torch.cuda.get_device_name(torch.device(device))
        out["cuda"] = torch.version.cuda
    else:
        out["name"] = out["cpu"]
    return out


_COMMAND: list[str] | None = None


def record_command(argv: list[str]) -> None:
    """Set the command that provenance reports (``[script, *arguments]``); seg.cli.run_main calls it,
    so that a script's ``main(argv)`` called in-process reports its own arguments, not the caller's."""
    global _COMMAND
    _COMMAND = list(argv)


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (``python scripts/train.py --config ...``), shell-quoted."""
    argv = (_COMMAND or sys.argv) if argv is None else argv
    program = argv[0] if argv else ""
    prefix = ["python"] if program.endswith(".py") else []
    return shlex.join(prefix + [_relative(program)] + list(argv[1:])) if argv else ""


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it lies inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path


def provenance(device: str = "cpu", argv: list[str] | None = None) -> dict:
    """The block written as ``"provenance"`` into every result file."""
    return {**git_state(), "command": command_line(argv), "versions": versions(), "device": device_description(device)}
