"""Several processes training one model (DDP, launched by torchrun): who this process is, and the collectives.

:func:`session` starts the process group when torchrun's environment says there are several processes
(``WORLD_SIZE`` > 1): ``nccl`` on CUDA (one device per process, ``cuda:LOCAL_RANK``), ``gloo`` on the CPU,
or ``train.dist_backend``. Besides it, a ``gloo`` control group with a short timeout
(:data:`CONTROL_TIMEOUT_S`) carries the decisions every rank must share: the setup's outcome
(:meth:`Job.share`), the finite-loss flag (:func:`first_bad_step`), gathered Python objects.

Quantities that add up are summed over ranks (counts, histograms, calibration sums, loss sums), never
averaged as ratios; per-image rows are gathered. Every collective is a no-op outside DDP, so the
single-process path runs the same code.
"""

from __future__ import annotations

import datetime
import gc
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from seg.errors import ConfigError, PeerFailed, exit_code
from seg.launch import environment_world

CONTROL_TIMEOUT_S = 120  # no answer from a rank within this: it failed or hung; the others stop
# how a collective fails when another process of the job has died (gloo, NCCL): that process printed why
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "communicator was aborted")

T = TypeVar("T")
_control: Any = None  # the gloo control group of the current session


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if _distributed() else 1


@dataclass(frozen=True)
class Job:
    """This process's place in the job: ``rank`` of ``world`` processes, its device, and the process
    group's backend ("" for one process)."""

    rank: int
    world: int
    device: torch.device
    backend: str = ""

    @property
    def main(self) -> bool:
        """The process that writes the run directory, metrics, checkpoints and W&B (rank 0)."""
        return self.rank == 0

    def share(self, fn: Callable[[], T]) -> T:
        """``fn()`` run by rank 0 alone, its result handed to every rank.

        A failure on rank 0 is raised there (it prints the one-line error); the other ranks raise
        :class:`PeerFailed` with the same exit code and print nothing.
        """
        if self.world == 1:
            return fn()
        payload: list[Any] = [None]
        if self.main:
            try:
                payload[0] = ("ok", fn())
            except BaseException as err:
                dist.broadcast_object_list([("failed", exit_code(err))], src=0, group=_control)
                raise
        dist.broadcast_object_list(payload, src=0, group=_control)
        status, value = payload[0]
        if status == "failed":
            raise PeerFailed(value)
        return value

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, then (once it succeeded) on the other ranks: each rank's own result.

        For work every rank does for itself whose refusals and warnings are the same everywhere (building
        the loss, the loaders, the model): reported once, by rank 0.
        """
        box: list[Any] = []

        def on_main() -> None:
            box.append(fn())

        self.share(on_main if self.main else lambda: None)
        if self.main:
            return box[0]
        with warnings.catch_warnings():  # rank 0 showed them
            warnings.simplefilter("ignore")
            return fn()


def check_global_batch(batch_size: int, world: int) -> None:
    """``train.batch_size`` is the global batch: it must divide by the number of processes."""
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size: {batch_size} does not divide by the {world} processes of this job; it is the "
            f"global batch (each process takes batch_size / {world}): make it a multiple of {world}"
        )


def resolve_device(name: str, local_rank: int = 0, share_gpu: bool = False) -> torch.device:
    """``train.device`` for this process: ``auto`` is CUDA when there is one; under torchrun each process
    takes the GPU of its local rank (with ``share_gpu``, gloo's processes may share GPUs; NCCL refuses)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cuda":
        return torch.device(name)
    count = torch.cuda.device_count()
    if local_rank >= count and not share_gpu:
        raise ConfigError(
            f"train.device: process {local_rank} of this machine has no GPU of its own ({count} visible); "
            "start at most one process per GPU (--nproc_per_node), or set train.dist_backend: gloo to share them"
        )
    return torch.device("cuda", local_rank % count)


@contextmanager
def session(device_name: str, backend: str = "auto") -> Iterator[Job]:
    """This process's :class:`Job`; under torchrun (``WORLD_SIZE`` > 1) the process group is started here
    and ended on leaving (unless the caller started it)."""
    global _control
    world = environment_world()
    if world == 1 and not _distributed():
        yield Job(0, 1, resolve_device(device_name))
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    device = resolve_device(device_name, local_rank, share_gpu=backend == "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("train.dist_backend: nccl needs CUDA devices (train.device cpu); use auto or gloo")
    owned = not dist.is_initialized()
    if owned:
        if "MASTER_ADDR" not in os.environ:
            raise ConfigError(
                f"WORLD_SIZE={world} is set but MASTER_ADDR is not: launch several processes with torchrun "
                "(or train.py --nproc N)"
            )
        chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(chosen, device_id=device if chosen == "nccl" else None)
    _control = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=CONTROL_TIMEOUT_S))
    try:
        yield Job(dist.get_rank(), dist.get_world_size(), device, str(dist.get_backend()))
    except RuntimeError as err:
        if peer_gone(err):  # the failing process printed its one line; this one adds nothing
            raise PeerFailed(1) from err
        raise
    finally:
        _control = None
        if owned and dist.is_initialized():
            gc.collect()  # DDP's leftovers freed after the group is gone abort the process (SIGABRT) at times
            dist.destroy_process_group()


def data_parallel(model: torch.nn.Module, job: Job, sync_batchnorm: bool) -> torch.nn.Module:
    """``model`` wrapped for training by ``job``'s processes (itself for one process). With
    ``sync_batchnorm`` and NCCL, its BatchNorm layers become SyncBatchNorm first (in place in the returned
    module tree; state_dict keys unchanged): statistics over the global batch. gloo (CPU) cannot."""
    if job.world == 1:
        return model
    if sync_batchnorm and job.backend == "nccl":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[job.device.index] if job.device.type == "cuda" else None
    )


def peer_gone(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process of the job stopped."""
    return isinstance(err, dist.DistNetworkError) or (
        isinstance(err, RuntimeError) and any(text in str(err) for text in PEER_GONE)
    )


def all_reduce_counts(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over DDP ranks in place (and return it); a no-op outside DDP.

    For dataset-level quantities that add up: counts [C,4], histograms [C,2,G+1],
    calibration sums [C,bins,3], loss sums. Never use it on ratios.
    """
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _SumOverRanks(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the gradients (each rank holds a copy of
    the summed loss, so the job's objective is their sum; DDP's averaging then leaves the gradient of one)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over DDP ranks, differentiably: a loss built from such sums is the loss of the
    global batch on every rank, and (after DDP averages the gradients) its gradient is the global batch's.
    A no-op outside DDP. Every rank must call it, in the same order."""
    return _SumOverRanks.apply(tensor) if _distributed() else tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``tensor`` over DDP ranks, in place; a no-op outside DDP."""
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` [n_rank, ...] over DDP ranks along dim 0: [sum n_rank, ...].

    Per-image counts cannot be summed over ranks (each rank holds other images), so
    they are gathered; ranks may hold different numbers of images (rows are padded to
    the largest count for the collective and trimmed after). Rank order, then row
    order; a no-op outside DDP. Every rank must call it.
    """
    if not _distributed():
        return tensor
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    rows = [int(s) for s in sizes]
    padded = tensor.new_zeros((max(rows), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, rows, strict=False)])


def merge_dicts(local: dict) -> dict:
    """The union of every rank's ``local`` dict (keys are disjoint: each rank holds other images);
    a no-op outside DDP. Every rank must call it."""
    if not _distributed():
        return local
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local, group=_control)
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return merged


def first_bad_step(first_bad: torch.Tensor) -> int:
    """The earliest step (1-based) of a non-finite loss on any rank, or -1 (one host sync; a collective
    over the control group under DDP, so that every rank stops at the same point)."""
    step = int(first_bad)
    if not _distributed():
        return step
    flag = torch.tensor([step if step >= 0 else torch.iinfo(torch.int64).max], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=_control)
    value = int(flag)
    return -1 if value == torch.iinfo(torch.int64).max else value


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so that every rank evaluates
    exactly the model rank 0 saves; a no-op outside DDP."""
    if not _distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
