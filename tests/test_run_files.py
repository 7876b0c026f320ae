"""Tests for seg/run_files.py on run directories written by hand: where a run lives, whether to resume
(fresh, resume, finished, refused for another config), the FAILED marker's name, the criterion's
checkpointed state (old format included) and the divergence message. Interrupted and resumed runs
end to end are in tests/test_training.py."""

import json

import numpy as np
import pytest
import torch
from conftest import REPO

from seg.config import BASE_CONFIG, MaskSpec, load_config, save_config
from seg.data.counts import MaskCounts
from seg.errors import ConfigError, TrainingDiverged
from seg.losses import Criterion
from seg.run_files import (
    FAILED,
    check_resume,
    diverged,
    load_criterion_state,
    make_run_directory,
    run_directory,
)
from seg.weighting.registry import build_strategy


def config(tmp_path, *overrides):
    return load_config(BASE_CONFIG, [f"run.out_dir={tmp_path}", "run.name=exp", "train.epochs=4", *overrides])


def written_run(tmp_path, *overrides, last=True, summary=None):
    """A run directory as fit leaves it: config.yaml, maybe checkpoints/last.pt and summary.json."""
    cfg = config(tmp_path, *overrides)
    run = run_directory(cfg)
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    if last:
        (run / "checkpoints" / "last.pt").write_bytes(b"only its presence is checked here")
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_run_directory_is_out_dir_slash_name(tmp_path, monkeypatch):
    assert run_directory(config(tmp_path)) == tmp_path / "exp"
    monkeypatch.chdir(REPO)
    assert run_directory(load_config(BASE_CONFIG)) == REPO / "runs" / "default"  # relative to the working directory
    monkeypatch.chdir(tmp_path)
    assert run_directory(load_config(BASE_CONFIG)) == tmp_path / "runs" / "default"
    monkeypatch.setenv("SEG_TEST_RUNS", str(tmp_path / "elsewhere"))
    cfg = load_config(BASE_CONFIG, ["run.out_dir=${SEG_TEST_RUNS}/grid", "run.name=b"])
    assert run_directory(cfg) == tmp_path / "elsewhere" / "grid" / "b"


def test_the_failed_marker_is_named_failed():
    assert FAILED == "FAILED"


def test_check_resume_fresh_and_resume(tmp_path, capsys):
    assert check_resume(config(tmp_path), tmp_path / "exp") is None  # nothing there: fresh
    run = written_run(tmp_path)
    assert check_resume(config(tmp_path), run) == {}  # same config, a last.pt: resume
    assert check_resume(config(tmp_path, "train.epochs=9"), run) == {}  # train.epochs may change
    assert capsys.readouterr().out == ""


def test_check_resume_of_a_finished_run_returns_its_summary(tmp_path):
    summary = {"epochs_completed": 4, "best_epoch": 3}
    run = written_run(tmp_path, summary=summary)
    assert check_resume(config(tmp_path), run) == summary
    assert check_resume(config(tmp_path, "train.epochs=3"), run) == summary  # fewer epochs: done as well
    assert check_resume(config(tmp_path, "train.epochs=6"), run) == {}  # more epochs: resume


def test_check_resume_refuses_another_config(tmp_path):
    run = written_run(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_resume(config(tmp_path, "train.lr=0.01", "loss.weighting=per_batch", "train.epochs=8"), run)
    assert str(err.value) == (
        f"{run}: this run exists with a different config (differs in: loss.weighting, train.lr); "
        "choose another run.name, or rerun with the same config to resume"
    )


def test_check_resume_starts_afresh_after_an_attempt_without_a_checkpoint(tmp_path, capsys):
    run = written_run(tmp_path, last=False)
    (run / FAILED).write_text("an earlier failure")
    assert check_resume(config(tmp_path, "train.lr=0.01"), run) is None  # even with another config
    out = capsys.readouterr().out
    assert out == f"{run}: the previous attempt stopped before its first checkpoint; starting afresh\n"
    # a summary.json alone (last.pt removed) still holds a finished run: compared, not started afresh
    run = written_run(tmp_path / "b", last=False, summary={"epochs_completed": 4})
    assert check_resume(config(tmp_path / "b"), run) == {"epochs_completed": 4}


def test_make_run_directory_creates_checkpoints_or_names_the_key(tmp_path):
    make_run_directory(tmp_path / "runs" / "exp")
    assert (tmp_path / "runs" / "exp" / "checkpoints").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^run.out_dir: cannot create .* is a file\); choose a writable folder$"):
        make_run_directory(tmp_path / "file" / "exp")


def test_diverged_names_the_epoch_where_and_the_last_good_checkpoint(tmp_path):
    last = tmp_path / "last.pt"
    err = diverged(1, "step 3 of 8", {"epoch": 0}, last)
    assert isinstance(err, TrainingDiverged)
    assert str(err) == (
        "training diverged: non-finite loss in epoch 1, step 3 of 8; no checkpoint was written. "
        "Lower train.lr (or check the data and loss.clamp)"
    )
    assert "no checkpoint was written" in str(diverged(3, "step 1 of 8", {"epoch": 2}, last))  # last.pt is gone
    last.write_bytes(b"")
    assert str(diverged(3, "step 1 of 8", {"epoch": 2}, last)) == (
        f"training diverged: non-finite loss in epoch 3, step 1 of 8; last good checkpoint: {last} (epoch 2). "
        "Lower train.lr (or check the data and loss.clamp)"
    )


def test_a_last_checkpoint_of_the_older_format_resumes_the_ema():
    """last.pt files written before the criterion was saved hold the EMA value as weighting_previous."""
    strategy_counts = MaskCounts(1, positive_pixels=np.array([30]), valid_pixels=100, all_zero_pixels=70)
    loss = load_config(BASE_CONFIG, ["loss.weighting=per_batch", "loss.ema=0.9"]).loss

    def criterion():
        return Criterion(build_strategy(loss, strategy_counts, MaskSpec("binary", ("a",))))

    def batch(positives):
        target = torch.zeros(1, 1, 2, 2)
        target.view(-1)[:positives] = 1
        return {"target": target, "valid": torch.ones(1, 1, 2, 2, dtype=torch.bool)}

    trained, logits = criterion(), torch.zeros(1, 1, 2, 2)
    for positives in (1, 2):
        trained(logits, batch(positives))
    legacy, current, fresh = criterion(), criterion(), criterion()
    load_criterion_state(legacy, {"weighting_previous": trained.strategy.previous.clone()})
    load_criterion_state(current, {"criterion": trained.state_dict()})
    load_criterion_state(fresh, {"weighting_previous": None})  # the other strategies wrote None: nothing to load
    expected = trained(logits, batch(1))[2]  # .9 * (.9 * 3 + .1 * 1) + .1 * 3 = 2.82
    assert expected.item() == pytest.approx(2.82)
    assert torch.equal(legacy(logits, batch(1))[2], expected) and torch.equal(current(logits, batch(1))[2], expected)
    assert fresh(logits, batch(1))[2].item() == pytest.approx(3.0)  # no previous value: the batch's own
