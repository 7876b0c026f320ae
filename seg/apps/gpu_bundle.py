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

It ends with the commands to run there (scripts/gpu_visit.sh; README: "Running on a GPU machine"): for each,
the folders to carry, its load in MiB and the command line, which names the commit the copy comes from
(SEG_SOURCE_COMMIT: the copy has no .git; --commands prints them again after a commit). Exit codes: 0 done,
2 bad arguments or data or a load over the limit, 1 other (e.g. pip could not download).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from seg.cli import ArgumentParser, add_common_arguments
from seg.config import ConfigError
from seg.provenance import SOURCE_COMMIT, SOURCE_DIRTY

SCRIPT = "scripts/gpu_bundle.py"  # the command provenance records (as typed at the repository root)
REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
CARRY_LIMIT_MIB = 64  # what one command may take along: the working tree and the carried folders
VISIT_SCRIPT = "scripts/gpu_visit.sh"  # what runs there
SLICE_RUNS = 4  # runs per grid slice in the printed commands (at once; a first visit measures what fits)

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
    """``{canonical name: version}`` of requirements.lock, read by scripts/check_lock.py's ``read_lock`` (the
    lock's one reader; a script, standard library only, so loaded from its file)."""
    spec = importlib.util.spec_from_file_location("check_lock", REPO / "scripts" / "check_lock.py")
    assert spec is not None and spec.loader is not None
    check_lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_lock)
    return check_lock.read_lock(lock)


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


@dataclass(frozen=True)
class Visit:
    """One command on the GPU machine: what it does, the folders it carries, the command line, its load."""

    what: str
    carry: list[str]
    command: str
    mib: float


def source_env(repo: Path = REPO) -> str:
    """``SEG_SOURCE_COMMIT=<HEAD> SEG_SOURCE_DIRTY=0|1``: the copy sent to the machine has no .git, so its runs
    record the commit it came from through these (seg.provenance; dirty: tracked files changed)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConfigError(f"{repo}: not a git checkout ({done.stderr.strip()})")
        return done.stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return f"{SOURCE_COMMIT}={git('rev-parse', 'HEAD')} {SOURCE_DIRTY}={int(dirty)}"


def dataset_of(experiment: Path) -> str:
    """The dataset folder an experiment trains on: the name of its base config's data.root."""
    from seg.config import expand_path, load_config
    from seg.experiments.experiment import load_experiment

    return expand_path(load_config(load_experiment(experiment).base).data.root).name


def visits(out: Path, tree: float, env: str, experiments: list[Path]) -> list[Visit]:
    """The check (tests and the GPU benchmark: both kinds of wheels and every one-part dataset that fits
    beside them) and, per experiment whose dataset is bundled, its parts but the last staged ahead and a grid
    slice carrying the last."""
    rel = os.path.relpath(out, REPO)
    wheels = [f"{rel}/whl"]

    def load(carry: list[str]) -> float:
        return tree + sum(folder_mib(REPO / c) for c in carry)

    def visit(what: str, carry: list[str], command: str) -> Visit:
        return Visit(what, carry, f"{env} bash {VISIT_SCRIPT} {command}", load(carry))

    def parts_of(name: str) -> list[str]:
        found = sorted((out / "data").glob(f"{name}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        return [f"{rel}/data/{p.name}" for p in found]

    check = [*wheels, f"{rel}/whl-tracking"]
    for name in sorted({p.name.rsplit(".", 1)[0] for p in (out / "data").glob("*.*")}):
        parts = parts_of(name)
        if len(parts) == 1 and load([*check, *parts]) <= CARRY_LIMIT_MIB:
            check += parts  # the suite reads the real data where it finds it
    plan = [visit("check: the CUDA tests, the GPU benchmark, the suite", check, "check 480")]
    for experiment in experiments:
        parts = parts_of(dataset_of(experiment))
        if not parts:
            continue
        for k, part in enumerate(parts[:-1], 1):
            plan.append(visit(f"{experiment.stem}: part {k} of its data, ahead", [*wheels, part], "stage"))
        where = os.path.relpath(experiment, REPO)
        grid = f"grid {where} {SLICE_RUNS} {SLICE_RUNS} 540"
        plan.append(visit(f"{experiment.stem}: a grid slice ({SLICE_RUNS} runs at once)", [*wheels, parts[-1]], grid))
    return plan


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
    parser.add_argument(
        "--commands", action="store_true", help="only print the commands for what .gpu/ holds (at the current commit)"
    )
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
    if not (args.no_wheels or args.commands):
        pins = locked_versions()
        download_wheels(pinned(RUN_PACKAGES, pins), args.out / "whl")
        print(f"{args.out / 'whl'}: {len(RUN_PACKAGES)} wheels, {folder_mib(args.out / 'whl'):.1f} MiB")
        if not args.no_tracking:
            download_wheels(pinned(TRACKING_PACKAGES, pins), args.out / "whl-tracking")
            size = folder_mib(args.out / "whl-tracking")
            print(f"{args.out / 'whl-tracking'}: {len(TRACKING_PACKAGES)} wheels, {size:.1f} MiB")
    tree = tree_mib()
    part_mib = args.part_mib or CARRY_LIMIT_MIB - tree - folder_mib(args.out / "whl") - 4  # 4: the tree may grow
    for name in [] if args.commands else names:
        parts = pack(shared / name, args.out / "data", name, part_mib)
        sizes = ", ".join(f"{folder_mib(p):.1f}" for p in parts)
        print(f"{name}: {folder_mib(shared / name):.1f} MiB in {len(parts)} part(s) of {sizes} MiB", flush=True)
    experiments = sorted(p for p in (REPO / "experiments").glob("*.yaml") if not p.name.endswith(".sweep.yaml"))
    plan = visits(args.out, tree, source_env(), experiments)
    print(f"\nThe commands (the working tree, {tree:.1f} MiB, travels with every one; limit {CARRY_LIMIT_MIB} MiB):")
    for visit in plan:
        over = "  OVER THE LIMIT" if visit.mib > CARRY_LIMIT_MIB else ""
        print(f"\n{visit.mib:5.1f} MiB  {visit.what}{over}\n  carry: {visit.carry}\n  command: {visit.command}")
    if any(visit.mib > CARRY_LIMIT_MIB for visit in plan):
        print("a load is over the limit: lower --part-mib", file=sys.stderr)
        return 2
    return 0
