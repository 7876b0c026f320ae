"""Tests for seg/schedule.py: cosine segments by hand, resuming the same plan, and another train.epochs
continuing from the current LR without a jump (the end-to-end case through fit is in tests/test_training.py)."""

import pytest
import torch

from seg import schedule
from seg.errors import ConfigError

LR, STEPS = 1e-3, 2  # 2 steps per epoch


def optimizer(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def advance(opt, scheduler, steps: int) -> float:
    for _ in range(steps):
        opt.step()
        scheduler.step()
    return schedule.current_lr(opt)


def trained_for(steps: int, epochs: int = 4) -> dict:
    """What last.pt holds (optimizer, scheduler, lr_schedule) after ``steps`` steps of a fresh ``epochs`` run."""
    opt = optimizer()
    segments = schedule.first_segment(epochs, LR)
    scheduler = schedule.cosine(opt, segments[0], STEPS)
    advance(opt, scheduler, steps)
    return {"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(), "lr_schedule": segments}


def resumed(saved: dict, done: int, epochs: int):
    """As fit resumes: a fresh optimizer, its saved state, then resume_schedule."""
    opt = optimizer()
    opt.load_state_dict(saved["optimizer"])
    segments, scheduler = schedule.resume_schedule(opt, saved, done, epochs, STEPS, "run-a")
    return opt, segments, scheduler


def test_first_segment():
    assert schedule.first_segment(10, 0.001) == [{"epochs": [0, 10], "lr_start": 0.001}]


def test_a_cosine_segment_by_hand():
    opt = optimizer()
    scheduler = schedule.cosine(opt, {"epochs": [0, 4], "lr_start": LR}, STEPS)  # 8 steps from 1e-3 to 0
    assert scheduler.T_max == 8
    assert schedule.current_lr(opt) == pytest.approx(1e-3, rel=1e-12)  # step 0: the start
    assert advance(opt, scheduler, 2) == pytest.approx(8.535534e-4, rel=1e-6)  # 1e-3 * (1 + cos(pi/4)) / 2
    assert advance(opt, scheduler, 2) == pytest.approx(5e-4, rel=1e-9)  # middle: 1e-3 * (1 + cos(pi/2)) / 2
    assert advance(opt, scheduler, 3) == pytest.approx(3.806023e-5, rel=1e-6)  # 1e-3 * (1 + cos(7pi/8)) / 2
    assert advance(opt, scheduler, 1) == pytest.approx(0.0, abs=1e-15)  # end
    assert schedule.cosine(optimizer(), {"epochs": [3, 3], "lr_start": LR}, STEPS).T_max == 1  # never 0


def test_resuming_the_same_plan_continues_the_saved_scheduler():
    saved = trained_for(4)  # 2 of 4 epochs: LR 5e-4
    opt, segments, scheduler = resumed(saved, done=2, epochs=4)
    assert segments == [{"epochs": [0, 4], "lr_start": LR}]
    assert schedule.current_lr(opt) == pytest.approx(5e-4, rel=1e-9)  # the new scheduler did not reset it
    assert advance(opt, scheduler, 2) == pytest.approx(1.464466e-4, rel=1e-6)  # 1e-3 * (1 + cos(3pi/4)) / 2
    assert advance(opt, scheduler, 2) == pytest.approx(0.0, abs=1e-15)

    opt, segments, _ = resumed(trained_for(8), done=4, epochs=4)  # finished (killed before summary.json)
    assert segments == [{"epochs": [0, 4], "lr_start": LR}] and schedule.current_lr(opt) == pytest.approx(0, abs=1e-15)


def test_more_epochs_start_a_new_segment_from_the_current_lr():
    saved = trained_for(4)  # 2 of 4 epochs done: LR 5e-4
    opt, segments, scheduler = resumed(saved, done=2, epochs=6)
    assert segments == [{"epochs": [0, 4], "lr_start": LR}, {"epochs": [2, 6], "lr_start": pytest.approx(5e-4)}]
    assert saved["lr_schedule"] == [{"epochs": [0, 4], "lr_start": LR}]  # the saved list is not changed
    assert schedule.current_lr(opt) == pytest.approx(5e-4, rel=1e-9)  # no jump at the resume point
    assert scheduler.T_max == 8  # 4 more epochs x 2 steps
    assert advance(opt, scheduler, 2) == pytest.approx(4.267767e-4, rel=1e-6)  # 5e-4 * (1 + cos(pi/4)) / 2
    assert advance(opt, scheduler, 2) == pytest.approx(2.5e-4, rel=1e-9)  # 5e-4 * (1 + cos(pi/2)) / 2
    assert advance(opt, scheduler, 4) == pytest.approx(0.0, abs=1e-15)


def test_fewer_epochs_but_more_than_done_also_start_a_new_segment():
    opt, segments, scheduler = resumed(trained_for(4), done=2, epochs=3)  # 1 more epoch instead of 2
    assert segments[-1] == {"epochs": [2, 3], "lr_start": pytest.approx(5e-4)} and scheduler.T_max == 2
    assert advance(opt, scheduler, 1) == pytest.approx(2.5e-4, rel=1e-9)  # 5e-4 * (1 + cos(pi/2)) / 2
    assert advance(opt, scheduler, 1) == pytest.approx(0.0, abs=1e-15)


def test_a_checkpoint_without_lr_schedule_had_one_cosine_over_its_configured_epochs():
    saved = trained_for(4)
    del saved["lr_schedule"]
    saved["config"] = {"train": {"epochs": 4, "lr": LR}}
    assert resumed(saved, done=2, epochs=4)[1] == [{"epochs": [0, 4], "lr_start": LR}]
    assert resumed(saved, done=2, epochs=6)[1] == [
        {"epochs": [0, 4], "lr_start": LR},
        {"epochs": [2, 6], "lr_start": pytest.approx(5e-4)},
    ]


def test_a_finished_schedule_cannot_be_extended():
    with pytest.raises(ConfigError) as err:
        resumed(trained_for(8), done=4, epochs=6)
    message = str(err.value)
    assert message.startswith("train.epochs: run-a finished its cosine schedule at epoch 4 (learning rate ")
    assert message.endswith("6 epochs would continue at LR 0. Start a new run (another run.name) with train.epochs=6")
