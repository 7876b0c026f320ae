"""How training processes are started: torchrun's environment, and ``train.py --nproc N``.

``train.py --nproc N`` starts N training processes on this machine through PyTorch's own launcher
(``torch.distributed.run``'s elastic agent, as ``torchrun --standalone --nproc_per_node N`` does) and
exits with the failing process's exit code (2 bad input, 3 diverged, ...), where torchrun exits 1 and
prints its ChildFailedError report. Nothing here imports torch until a launch.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path

NPROC_FLAG = "--nproc"


def environment_rank() -> int:
    """This process's rank as torchrun sets it (``RANK``; 0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def environment_world() -> int:
    """The number of processes as torchrun sets it (``WORLD_SIZE``; 1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each launched process is given)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == NPROC_FLAG:
            skip = True
        elif not arg.startswith(NPROC_FLAG + "="):
            out.append(arg)
    return out


def launch(nproc: int, module: str, argv: list[str]) -> int:
    """Run ``python -m module *argv`` as ``nproc`` processes of one job on this machine; the exit code of
    the first process that failed (0 when all finished). Each failing process prints its own one-line
    error; the launcher adds nothing."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    package_root = str(Path(__file__).resolve().parents[1])  # the launched processes import this seg
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its reports repeat the error
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
    )
    try:
        elastic_launch(config, sys.executable)("-m", module, *argv)
    except ChildFailedError as err:
        return reported_code([err.failures[rank].exitcode for rank in sorted(err.failures)])
    return 0


def reported_code(codes: list[int]) -> int:
    """The job's exit code from its failed processes' codes (in rank order): the first specific one (2 bad
    input, 3 diverged, ...) over 1 (an error, or a process whose peer failed) over a signal (the first;
    -s is reported as 128 + s)."""
    specific = [code for code in codes if code > 1]
    if specific:
        return specific[0]
    if 1 in codes:
        return 1
    return 128 - codes[0] if codes[0] < 0 else codes[0]
