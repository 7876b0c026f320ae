"""DDP collectives for quantities that add up: counts are summed or gathered over ranks, never ratios.

Every function is a no-op outside an initialised process group with more than one rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_counts(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over DDP ranks in place (and return it); a no-op outside DDP.

    For dataset-level quantities that add up: counts [C,4], histograms [C,2,G+1],
    calibration sums [C,bins,3]. Never use it on ratios.
    """
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
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
