"""Prepare what a GPU machine needs to run this project: wheels for its Python, and the data in parts.

    python scripts/gpu_bundle.py                     # .gpu/: wheels, and every dataset found, in parts
    python scripts/gpu_bundle.py --datasets isbi2012_membrane --no-tracking

The GPU machine this is written for has Python 3.12 with torch, torchvision, timm, OpenCV and
scikit-image, but not this project's other dependencies, no network, and receives at most 64 MiB of
files per command (the working tree included). This writes, under --out (default .gpu/, ignored by git):

- ``whl/``: wheels (Python 3.12, manylinux x86-64) of the packages the machine lacks, at the versions of
  requirements.lock: segmentation-models-pytorch, albumentations and their needs;
- ``whl-tracking/``: wandb and its needs, for the test suite (training there runs with W&B disabled);
- ``data/<dataset>.<k>/``: each dataset under SEG_SHARED_DATA (default ../shared/data) in parts of at most
  --part-mib MiB, colour PNGs re-encoded as lossless WebP (seg.data.packing; unpacking checks every
  pixel), so that a part fits one command beside the tree and the wheels.

It ends with the size of each command's load. scripts/gpu_visit.sh runs on the machine (README: "Running
on a GPU machine"). Exit codes: 0 done, 2 bad arguments or data, 1 other (e.g. pip could not download).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from seg.cli import ArgumentParser, add_common_arguments
from seg.config import ConfigError

SCRIPT = "scripts/gpu_bundle.py"  # the command provenance records (as typed at the repository root)
REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
CARRY_LIMIT_MIB = 64  # what one command may take along: the working tree and the carried folders

# The packages of requirements.lock that the GPU machine's image lacks (it holds torch, torchvision, timm,
# huggingface-hub, safetensors, numpy, scipy, scikit-image, OpenCV, PyYAML, tqdm, matplotlib, pytest,
# torchmetrics and the rest); installed there with --no-deps, so every one is named.
RUN_PACKAGES = (
    "segmentation-models-pytorch",
    "albumentations",
    "albucore",
    "stringzilla",
    "simsimd",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
)
TRACKING_PACKAGES = (
    "wandb",
    "cwevals",
    "distro",
    "sniffio",
    "platformdirs",
    "googleapis-common-protos",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-proto",
    "opentelemetry-semantic-conventions",
    "opentelemetry-exporter-http-transport",
    "opentelemetry-exporter-otlp-common",
    "opentelemetry-exporter-otlp-proto-common",
    "opentelemetry-exporter-otlp-proto-http",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """``{package: version}`` of requirements.lock's ``name==version`` lines."""
    pins = {}
    for line in lock.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.split()[0].strip(" \\")
    return pins


def pinned(packages: tuple[str, ...], pins: dict[str, str]) -> list[str]:
    missing = [name for name in packages if name not in pins]
    if missing:
        raise ConfigError(f"{LOCK.name}: no pin for {', '.join(missing)} (regenerate the lock: make lock)")
    return [f"{name}=={pins[name]}" for name in packages]


def download_wheels(requirements: list[str], folder: Path) -> None:
    """pip download of exactly these wheels for CPython 3.12 on manylinux x86-64 into a fresh ``folder``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", "--dest", str(folder)]
    command += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    done = subprocess.run(command + requirements, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip download failed for {folder.name} (network?): {done.stderr.strip()[-400:]}")


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


def tree_mib(repo: Path = REPO) -> float:
    """The working tree that travels with every command: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return sum((repo / name).stat().st_size for name in listed if name and (repo / name).is_file()) / 2**20


def loads(out: Path, tree: float) -> list[tuple[str, list[str], float]]:
    """(what, carry, MiB) of each kind of command: the check (tests, benchmark: wheels of both kinds and the
    first dataset's parts that fit) and one grid command per data part."""
    rel = os.path.relpath(out, REPO)
    wheels = [f"{rel}/whl"]
    check = [*wheels, f"{rel}/whl-tracking"]
    parts = sorted((out / "data").glob("*.*"))
    for part in parts:  # the check takes the datasets of one part along while they fit (the suite reads them)
        whole = not (out / "data" / f"{part.name.rsplit('.', 1)[0]}.2").exists()
        if whole and tree + sum(folder_mib(REPO / c) for c in [*check, f"{rel}/data/{part.name}"]) <= CARRY_LIMIT_MIB:
            check.append(f"{rel}/data/{part.name}")
    rows = [("check: the suite, the sync check, the GPU benchmark", check)]
    rows += [(f"data part {part.name}", [*wheels, f"{rel}/data/{part.name}"]) for part in parts]
    return [(what, carry, tree + sum(folder_mib(REPO / c) for c in carry)) for what, carry in rows]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="gpu_bundle.py", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / ".gpu", help="where to write (default .gpu/)")
    parser.add_argument("--datasets", nargs="*", help="dataset folders under SEG_SHARED_DATA (default: all there)")
    parser.add_argument(
        "--part-mib",
        type=float,
        default=None,
        help=f"largest data part in MiB (default: what {CARRY_LIMIT_MIB} MiB leaves beside the tree, whl/ and 4 MiB)",
    )
    parser.add_argument("--no-wheels", action="store_true", help="leave the wheels as they are")
    parser.add_argument("--no-tracking", action="store_true", help="no wandb wheels (the suite then needs them)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    from seg.data.packing import pack
    from seg.errors import DataError

    if args.part_mib is not None and args.part_mib <= 0:
        raise ConfigError(f"--part-mib must be positive, got {args.part_mib}")
    shared = Path(os.environ.get("SEG_SHARED_DATA", REPO.parent / "shared" / "data"))
    names = args.datasets if args.datasets is not None else sorted(p.name for p in shared.iterdir() if p.is_dir())
    for name in names:
        if not (shared / name).is_dir():
            raise DataError(f"{shared / name}: no such dataset folder (SEG_SHARED_DATA is {shared})")
    if not args.no_wheels:
        pins = locked_versions()
        download_wheels(pinned(RUN_PACKAGES, pins), args.out / "whl")
        print(f"{args.out / 'whl'}: {len(RUN_PACKAGES)} wheels, {folder_mib(args.out / 'whl'):.1f} MiB")
        if not args.no_tracking:
            download_wheels(pinned(TRACKING_PACKAGES, pins), args.out / "whl-tracking")
            size = folder_mib(args.out / "whl-tracking")
            print(f"{args.out / 'whl-tracking'}: {len(TRACKING_PACKAGES)} wheels, {size:.1f} MiB")
    tree = tree_mib()
    part_mib = args.part_mib or CARRY_LIMIT_MIB - tree - folder_mib(args.out / "whl") - 4  # 4: the tree may grow
    for name in names:
        parts = pack(shared / name, args.out / "data", name, part_mib)
        sizes = ", ".join(f"{folder_mib(p):.1f}" for p in parts)
        print(f"{name}: {folder_mib(shared / name):.1f} MiB in {len(parts)} part(s) of {sizes} MiB", flush=True)
    print(f"\nEach command's load (the working tree, {tree:.1f} MiB, travels with every one; limit {CARRY_LIMIT_MIB}):")
    too_large = False
    for what, carry, mib in loads(args.out, tree):
        too_large |= mib > CARRY_LIMIT_MIB
        print(f"  {mib:5.1f} MiB  {what}: carry {carry}{'  OVER THE LIMIT' if mib > CARRY_LIMIT_MIB else ''}")
    if too_large:
        print("a load is over the limit: lower --part-mib", file=sys.stderr)
        return 2
    return 0
