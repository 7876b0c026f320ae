"""A check that a block of code makes no host synchronisation: CUDA's own, or a stand-in on the CPU.

On CUDA, ``torch.cuda.set_sync_debug_mode("error")`` raises at every call that makes the host wait for
the device (:func:`cuda_sync_errors`). On the CPU nothing ever waits, so a sync that creeps into the
training step would pass every CI run: :class:`CpuSyncGuard` raises :class:`HostSync` (an AssertionError
naming the op) at each operator that synchronises when its tensors are on a CUDA device
(:data:`SYNC_OPS`, boolean-mask indexing), and at each read of a tensor's values into Python or NumPy
(:data:`HOST_READS`). What it cannot see on the CPU: a copy to the CPU by ``.to("cpu")`` or ``copy_``
(the source is the CPU already), and a branch on the device type whose CUDA side differs; the CUDA run
of the same test covers both. :func:`no_host_sync` picks the one for a device.

    with no_host_sync(device, optimizer):
        train_step(...)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import FrameType

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# aten operators (every overload) that synchronise a CUDA device with the host: what each waits for
SYNC_OPS: tuple[str, ...] = (
    "_local_scalar_dense",  # .item(), float(t), int(t), bool(t), `if t:`: the value itself
    "item",
    "is_nonzero",  # bool() of a one-element tensor
    "equal",  # torch.equal: one bool
    "allclose",
    "nonzero",  # t.nonzero(), torch.where(condition), argwhere: the output's size
    "nonzero_numpy",
    "masked_select",  # the output's size
    "_unique",  # torch.unique and its variants: the output's size
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "unique_dim_consecutive",
    "bincount",  # the largest value (the output's size), even with minlength
    "repeat_interleave",  # with a tensor of repeats and no output_size: the output's size
)
# Not listed, since they do not wait on CUDA: nonzero_static (a fixed size), _assert_async (a device-side
# assert), index / index_put_ with integer indices; histc only with min == max (not used in seg).
BOOL_INDEXED_OPS: tuple[str, ...] = ("index", "index_put", "index_put_", "_index_put_impl_")  # t[mask], t[mask] = v
HOST_READS: tuple[str, ...] = ("tolist", "numpy", "cpu", "__array__")  # Tensor methods: values to the host
# Device branches whose CPU side uses a listed op and whose CUDA side does not (CUDA's sync-debug mode checks
# that side): (op, module, function) allowed when called from that function.
CPU_SIDE_OF_A_BRANCH: tuple[tuple[str, str, str], ...] = (
    ("bincount", "seg.scoring.metrics", "slot_counts"),  # CUDA: scatter_add_ into a fixed size
)


class HostSync(AssertionError):
    """An operation that would make the host wait for a CUDA device, inside a checked block."""


def _repeats_without_size(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> bool:
    return func.overloadpacket is torch.ops.aten.repeat_interleave and (
        func._overloadname != "self_int" and kwargs.get("output_size") is None
    )


def _bool_indices(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8) for index in indices or ())


def _called_from(module: str, function: str) -> bool:
    """Whether ``module.function`` is on the Python call stack."""
    code = getattr(getattr(sys.modules.get(module), function, None), "__code__", None)
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


class _SyncOps(TorchDispatchMode):
    def __init__(self, guard: CpuSyncGuard) -> None:
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if not self.guard.paused_depth:
            flagged = (
                (name in SYNC_OPS and name != "repeat_interleave")
                or _repeats_without_size(func, args, kwargs)
                or (name in BOOL_INDEXED_OPS and _bool_indices(args))
            )
            allowed = any(name == op and _called_from(module, fn) for op, module, fn in CPU_SIDE_OF_A_BRANCH)
            if flagged and not allowed:
                reason = " with a boolean mask" if name in BOOL_INDEXED_OPS else ""
                raise HostSync(f"host synchronisation: {func}{reason}")
        return func(*args, **kwargs)


class _HostReads(TorchFunctionMode):
    def __init__(self, guard: CpuSyncGuard) -> None:
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.guard.paused_depth and getattr(func, "__name__", None) in HOST_READS:
            raise HostSync(f"host synchronisation: Tensor.{func.__name__}() reads the values on the host")
        return func(*args, **(kwargs or {}))


class CpuSyncGuard:
    """Context manager: :class:`HostSync` at every op of :data:`SYNC_OPS` (and boolean-mask indexing,
    and the reads of :data:`HOST_READS`) run inside it, on any device, unless :meth:`paused`."""

    def __init__(self) -> None:
        self.paused_depth = 0
        self._modes: contextlib.ExitStack | None = None

    def __enter__(self) -> CpuSyncGuard:
        self._modes = contextlib.ExitStack()
        self._modes.enter_context(_HostReads(self))
        self._modes.enter_context(_SyncOps(self))
        return self

    def __exit__(self, *exc) -> None:
        assert self._modes is not None
        self._modes.close()
        self._modes = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Nothing is checked inside (what is known not to sync on CUDA although it does on the CPU)."""
        self.paused_depth += 1
        try:
            yield
        finally:
            self.paused_depth -= 1

    def exempt_step_of(self, optimizer: torch.optim.Optimizer) -> None:
        """Pause the check during ``optimizer.step()``. torch's optimizers (AdamW's foreach and single-tensor
        paths) keep the step count as a CPU tensor while the parameters are on CUDA (capturable=False) and read
        it with ``.item()``: a CPU read, no CUDA sync, but on the CPU the stand-in cannot tell it apart. On
        CUDA the real sync-debug mode checks the optimizer's step too."""

        def pause(*_: object) -> None:
            self.paused_depth += 1

        def resume(*_: object) -> None:
            self.paused_depth -= 1

        optimizer.register_step_pre_hook(pause)
        optimizer.register_step_post_hook(resume)


@contextlib.contextmanager
def cuda_sync_errors() -> Iterator[None]:
    """CUDA's sync-debug mode at ``error`` inside (a RuntimeError at each synchronising call), then back
    to ``default``."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def no_host_sync(device: torch.device | str, optimizer: torch.optim.Optimizer | None = None):
    """The check for ``device``: :func:`cuda_sync_errors` on CUDA, else a :class:`CpuSyncGuard` (with
    ``optimizer``'s step exempted)."""
    if torch.device(device).type == "cuda":
        return cuda_sync_errors()
    guard = CpuSyncGuard()
    if optimizer is not None:
        guard.exempt_step_of(optimizer)
    return guard
