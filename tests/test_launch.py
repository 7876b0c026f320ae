"""Tests for seg/launch.py: what the processes of train.py --nproc are given, and the job's exit code.

The launch itself runs in tests/test_training_distributed.py (2 processes, end to end).
"""

import pytest

from seg.launch import environment_rank, environment_world, reported_code, without_nproc


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--config", "c.yaml", "--nproc", "2", "train.epochs=1"], ["--config", "c.yaml", "train.epochs=1"]),
        (["--nproc=4", "--config", "c.yaml"], ["--config", "c.yaml"]),
        (["--config", "c.yaml", "--no-progress"], ["--config", "c.yaml", "--no-progress"]),
    ],
)
def test_the_launched_processes_get_the_arguments_without_nproc(argv, expected):
    assert without_nproc(argv) == expected


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([1, 2], 2),  # rank 1's bad input; rank 0 stopped because its peer did
        ([3, -15], 3),  # diverged; the other process was terminated by the launcher (SIGTERM)
        ([1, -15], 1),
        ([-9, -15], 128 + 9),  # killed by signals only: the first, as a shell reports it (128 + signal)
    ],
)
def test_the_job_exits_with_the_most_specific_code(codes, expected):
    assert reported_code(codes) == expected


def test_torchrun_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (environment_rank(), environment_world()) == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (environment_rank(), environment_world()) == (3, 4)
