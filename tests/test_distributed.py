"""Tests for seg/distributed.py: the DDP reductions (sum of counts, gathered rows) with 2 gloo processes."""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import random_case

from seg.distributed import all_gather_rows, all_reduce_counts

# ----------------------------------------------------------- DDP: 2 gloo processes


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from seg.scoring.validation import Evaluator

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        counts = torch.arange(8).view(2, 4) * (rank + 1)
        assert all_reduce_counts(counts) is counts and torch.equal(counts, torch.arange(8).view(2, 4) * 3)
        rows = torch.full((rank + 1, 2, 4), rank)  # rank 0 holds 1 image, rank 1 holds 2
        assert all_gather_rows(rows).tolist() == [[[0] * 4] * 2] + [[[1] * 4] * 2] * 2
        logits, target, valid = random_case(11, n=7, c=3)
        mine = slice(0, 3) if rank == 0 else slice(3, 7)  # unequal shares of the images
        evaluator = Evaluator(3, "cpu", log_q=torch.tensor([0.0, 1.0, 2.0]))
        evaluator.update(logits[mine], target[mine], valid[mine])
        result = evaluator.compute(["a", "b", "c"], "tuned")
        if rank == 0:
            with open(os.path.join(out_dir, "val.json"), "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_ddp_reductions_with_two_gloo_processes(tmp_path):
    from seg.scoring.validation import Evaluator

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    logits, target, valid = random_case(11, n=7, c=3)
    single = Evaluator(3, "cpu", log_q=torch.tensor([0.0, 1.0, 2.0]))
    single.update(logits, target, valid)
    expected = json.loads(json.dumps(single.compute(["a", "b", "c"], "tuned")))
    got = json.loads((tmp_path / "val.json").read_text())
    ece, expected_ece = got.pop("ece"), expected.pop("ece")
    assert got == expected  # counts-based scores are exact: same per-image counts, same sums
    for key in ("raw", "prior_corrected"):
        assert ece[key] == pytest.approx(expected_ece[key], abs=1e-12)
        assert ece[f"{key}_mean"] == pytest.approx(expected_ece[f"{key}_mean"], abs=1e-12)
