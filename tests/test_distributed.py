"""Tests for seg/distributed.py: the DDP collectives with 2 gloo processes (sums of counts, gathered rows,
the shared finite-loss flag, rank 0's setup outcome and buffers), and the process-less defaults.

Whole torchrun training runs are in tests/test_training_distributed.py.
"""

import gc
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import random_case

from seg.distributed import (
    Job,
    all_gather_rows,
    all_reduce_counts,
    all_reduce_max,
    broadcast_buffers,
    check_global_batch,
    data_parallel,
    first_bad_step,
    global_sum,
    merge_dicts,
    resolve_device,
    session,
)
from seg.errors import ConfigError, DataError, PeerFailed

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
        evaluator.update(logits[mine], target[mine], valid[mine], torch.arange(7)[mine])  # dataset indices
        result = evaluator.compute(["a", "b", "c"], "tuned")
        if rank == 0:
            with open(os.path.join(out_dir, "val.json"), "w") as f:
                json.dump(result, f)
        _control_collectives(rank)
    finally:
        gc.collect()  # as seg.distributed.session: DDP's leftovers go before the group does
        dist.destroy_process_group()


def _control_collectives(rank: int) -> None:
    """The collectives that keep ranks in step (asserted inside each process; a failure fails the spawn)."""
    assert all_reduce_max(torch.tensor([1.0, 5.0]) * (rank + 1)).tolist() == [2.0, 10.0]
    # the first non-finite step of any rank stops every rank at that step; -1 everywhere is "all finite"
    assert first_bad_step(torch.tensor(-1 if rank == 0 else 3)) == 3
    assert first_bad_step(torch.tensor(4 if rank == 0 else 2)) == 2
    assert first_bad_step(torch.tensor(-1)) == -1
    assert merge_dicts({rank: f"image of rank {rank}"}) == {0: "image of rank 0", 1: "image of rank 1"}
    job = Job(rank, 2, torch.device("cpu"))
    assert job.share(lambda: {"counts": [3, 4]} if rank == 0 else None) == {"counts": [3, 4]}
    assert job.main_first(lambda: rank * 10) == rank * 10  # each rank's own value, rank 0 first

    def refused():
        raise DataError("masks/a.png: value 7 not in positive_values")

    with pytest.raises(DataError if rank == 0 else PeerFailed) as raised:
        job.share(refused)  # rank 0 raises (and would print); rank 1 stops silently with its exit code
    assert rank == 0 or raised.value.code == 2
    with pytest.raises(DataError if rank == 0 else PeerFailed):
        job.main_first(refused)
    x = torch.tensor([1.0 + rank, 2.0], requires_grad=True)
    total = global_sum(x)  # [1 + 2, 2 + 2]
    (total**2).sum().backward()  # each rank's copy of the loss: the job's objective is their sum
    assert total.tolist() == [3.0, 4.0] and x.grad.tolist() == [2 * 2 * 3.0, 2 * 2 * 4.0]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    keys = list(net.state_dict())
    wrapped = data_parallel(net, Job(rank, 2, torch.device("cpu"), "gloo"), sync_batchnorm=True)
    assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
    assert type(wrapped.module[1]) is torch.nn.BatchNorm2d  # gloo: per-process statistics
    assert list(wrapped.module.state_dict()) == keys and wrapped.module is net  # saved as the plain model
    assert data_parallel(net, Job(0, 1, torch.device("cpu")), sync_batchnorm=True) is net
    bn = torch.nn.BatchNorm2d(2)
    bn.running_mean.fill_(float(rank + 1))
    broadcast_buffers(bn)
    assert bn.running_mean.tolist() == [1.0, 1.0]  # rank 0's statistics everywhere


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


def test_outside_ddp_every_collective_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    counts = torch.tensor([1, 2])
    assert all_reduce_counts(counts) is counts and counts.tolist() == [1, 2]
    assert all_reduce_max(torch.tensor([3.0])).tolist() == [3.0]
    assert first_bad_step(torch.tensor(5)) == 5 and first_bad_step(torch.tensor(-1)) == -1
    assert merge_dicts({1: "a"}) == {1: "a"}
    x = torch.ones(2, requires_grad=True)
    assert global_sum(x) is x
    with session("cpu") as job:
        assert (job.rank, job.world, job.main, job.device) == (0, 1, True, torch.device("cpu"))
        assert job.share(lambda: 7) == 7 and job.main_first(lambda: 8) == 8

        def refused():
            raise DataError("x")

        with pytest.raises(DataError):
            job.share(refused)


def test_a_global_batch_that_does_not_divide_by_the_processes_is_a_config_error():
    check_global_batch(8, 2)
    with pytest.raises(ConfigError, match=r"train.batch_size: 6 does not divide by the 4 processes"):
        check_global_batch(6, 4)


def test_several_processes_without_torchrun_are_refused_with_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 is set but MASTER_ADDR is not"), session("cpu"):
        pass


def test_cuda_requested_without_a_gpu_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device: cuda requested"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
