"""Tests for seg/training.py (fit) and the run files it keeps (seg/run_files.py): interrupted runs,
resume, more epochs, divergence and checkpoint safety, end to end on tiny data.

What is pinned: an interrupted run resumes to the same numbers as an uninterrupted one (the
criterion's state, e.g. the per_batch EMA, included; the older last.pt format, with
``weighting_previous``, is tested in tests/test_run_files.py); a run killed between its last
checkpoint and summary.json finishes on rerun; another train.epochs continues the LR from where it was (a new
cosine segment, recorded) and never jumps; a non-finite loss stops with exit 3 and leaves the last
good checkpoint; a checkpoint carrying a pickle payload is refused without running it.
"""

import json
import math
import os

import pytest
import torch
from conftest import REPO, TINY_TRAIN, interrupt_after_epoch

from seg import checkpoint
from seg.apps import evaluate as evaluate_app
from seg.apps import train as train_app
from seg.cli import run_main

TINY = TINY_TRAIN


def train(out, root, *args):
    return run_main(
        train_app.main,
        ["--config", str(REPO / "configs" / "synthetic.yaml"), f"run.out_dir={out}", f"data.root={root}", *TINY, *args],
    )


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("weighting", ["none", "per_batch"])
def test_interrupted_run_resumes_to_the_same_numbers(tmp_path, synthetic_root, monkeypatch, capsys, weighting):
    extra = [f"loss.weighting={weighting}", "train.epochs=3"] + (["loss.ema=0.9"] if weighting == "per_batch" else [])
    assert train(tmp_path / "a", synthetic_root, *extra) == 0
    interrupt_after_epoch(monkeypatch, 2)
    assert train(tmp_path / "b", synthetic_root, *extra) == 130
    monkeypatch.undo()
    run = tmp_path / "b" / "synthetic"
    assert (run / "FAILED").is_file() and not (run / "summary.json").exists()
    if weighting == "per_batch":  # the EMA state is in the checkpoint, with its flag
        assert bool(checkpoint.load(run / "checkpoints" / "last.pt")["criterion"]["strategy.has_previous"])
    assert train(tmp_path / "b", synthetic_root, *extra) == 0
    assert "resuming synthetic from epoch 2" in capsys.readouterr().out
    assert not (run / "FAILED").exists()
    assert rows(run) == [
        {**r, "time/epoch_s": r2["time/epoch_s"]}
        for r, r2 in zip(rows(tmp_path / "a" / "synthetic"), rows(run), strict=False)
    ]  # same computation: exact
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and summary["lr_schedule"] == [{"epochs": [0, 3], "lr_start": 0.001}]


def test_killed_before_summary_finishes_on_rerun(tmp_path, synthetic_root, capsys):
    assert train(tmp_path, synthetic_root, "train.epochs=1") == 0
    run = tmp_path / "synthetic"
    expected = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()  # as if killed between the final last.pt and summary.json
    assert train(tmp_path, synthetic_root, "train.epochs=1") == 0
    got = json.loads((run / "summary.json").read_text())
    assert {k: v for k, v in got.items() if k != "provenance"} == {
        k: v for k, v in expected.items() if k != "provenance"
    }
    assert not (run / "FAILED").exists() and "macro" in capsys.readouterr().out


def test_more_epochs_continue_the_lr_without_a_jump(tmp_path, synthetic_root, monkeypatch, capsys):
    interrupt_after_epoch(monkeypatch, 2)
    assert train(tmp_path, synthetic_root, "train.epochs=4") == 130  # 2 of 4 epochs done: LR half-way down
    monkeypatch.undo()
    capsys.readouterr()
    run = tmp_path / "synthetic"
    lr_now = rows(run)[-1]["lr"]
    # cosine over 4 epochs x 2 steps, after 4 steps: 1e-3 * (1 + cos(pi * 4 / 8)) / 2 = 5e-4
    assert lr_now == pytest.approx(5e-4, rel=1e-6)
    assert train(tmp_path, synthetic_root, "train.epochs=6") == 0  # 4 more epochs instead of 2
    lrs = [r["lr"] for r in rows(run)]
    assert len(lrs) == 6 and all(b <= a for a, b in zip(lrs, lrs[1:], strict=False))  # never climbs back up
    # new segment: cosine from 5e-4 to 0 over 4 epochs x 2 steps; after epoch 3 (2 of 8 steps):
    assert lrs[2] == pytest.approx(5e-4 * (1 + math.cos(math.pi * 2 / 8)) / 2, rel=1e-6)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["lr_schedule"] == [
        {"epochs": [0, 4], "lr_start": 0.001},
        {"epochs": [2, 6], "lr_start": pytest.approx(5e-4, rel=1e-6)},
    ]
    assert "epochs: 6" in (run / "config.yaml").read_text()

    # a finished schedule (LR 0) cannot be extended: one line, the run left as it was
    before = (run / "summary.json").read_text()
    assert train(tmp_path, synthetic_root, "train.epochs=8") == 2
    assert "finished its cosine schedule" in one_error_line(capsys)
    assert (run / "summary.json").read_text() == before and not (run / "FAILED").exists()
    assert "epochs: 6" in (run / "config.yaml").read_text()


def test_divergence_stops_with_exit_3_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_root, capsys, monkeypatch):
    # lr=1e6: the loss turns non-finite within a few steps; no summary, no non-finite checkpoint
    assert train(tmp_path, synthetic_root, "train.epochs=3", "train.lr=1e6") == 3
    err = one_error_line(capsys)
    assert err.startswith("error: training diverged: non-finite loss in epoch ") and "Lower train.lr" in err
    run = tmp_path / "synthetic"
    assert not (run / "summary.json").exists() and (run / "FAILED").is_file()
    for path in (run / "checkpoints").glob("*.pt"):
        assert f"{run / 'checkpoints' / 'last.pt'} (epoch" in err
        weights = checkpoint.load(path)["model"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), path

    # a healthy run that diverges later: last.pt and best.pt keep the last good epoch
    good = tmp_path / "good"
    assert train(good, synthetic_root, "train.epochs=2") == 0
    last = good / "synthetic" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    (good / "synthetic" / "summary.json").unlink()
    saved = checkpoint.load(last)
    saved["state"]["epoch"] = 1  # pretend epoch 2 is still to do, with a poisoned model
    saved["model"] = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in saved["model"].items()}
    checkpoint.save_atomic(saved, last)
    poisoned = last.read_bytes()
    assert train(good, synthetic_root, "train.epochs=2") == 3
    err = one_error_line(capsys)
    assert "epoch 2" in err and f"{last} (epoch 1)" in err
    assert last.read_bytes() == poisoned != before  # not overwritten by the diverged epoch
    weights = checkpoint.load(good / "synthetic" / "checkpoints" / "best.pt")["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evaluate(*args):
    return run_main(evaluate_app.main, list(args))


def test_checkpoints_load_weights_only_and_bad_ones_are_refused(tmp_path, synthetic_root, capsys):
    assert train(tmp_path, synthetic_root, "train.epochs=1") == 0
    run = tmp_path / "synthetic"
    best = run / "checkpoints" / "best.pt"
    assert torch.load(best, weights_only=True)["epoch"] == 1  # the project's own: plain tensors and values
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]["epoch"] == 1
    good = best.read_bytes()

    payload = _Payload()
    payload.marker = tmp_path / "pwned"
    torch.save({"model": {}, "epoch": payload}, best)
    assert _evaluate("--run", str(run), "--wandb", "disabled", "--no-progress") == 2
    assert "refused without running it" in one_error_line(capsys)
    assert not payload.marker.exists()  # its code never ran

    best.write_bytes(good[: len(good) // 2])
    assert _evaluate("--run", str(run), "--wandb", "disabled", "--no-progress") == 2
    assert f"{best}: not a readable checkpoint" in one_error_line(capsys)

    from seg.models import build_model

    foreign = build_model("Unet", "resnet34", None, 3)
    checkpoint.save_atomic({"model": foreign.state_dict(), "epoch": 1}, best)
    assert _evaluate("--run", str(run), "--wandb", "disabled", "--no-progress") == 2
    err = one_error_line(capsys)
    assert f"{best}: the checkpoint does not fit the model" in err and len(err) < 400


def test_a_run_that_failed_before_its_first_checkpoint_starts_afresh(tmp_path, synthetic_root, capsys):
    """A failed first attempt leaves config.yaml and FAILED but no checkpoint: the corrected rerun, even with
    another config, trains instead of being refused as "a different config"."""
    assert train(tmp_path, synthetic_root, "train.epochs=1", "train.lr=1e9", "train.max_steps_per_epoch=3") in (0, 3)
    run = tmp_path / "synthetic"
    for path in (run / "checkpoints").glob("*.pt"):
        path.unlink()
    (run / "summary.json").unlink(missing_ok=True)
    (run / "FAILED").write_text("an earlier failure")
    assert train(tmp_path, synthetic_root, "train.epochs=1") == 0
    assert "starting afresh" in capsys.readouterr().out
    assert not (run / "FAILED").exists() and "lr: 0.001" in (run / "config.yaml").read_text()


def test_resume_from_a_broken_last_checkpoint_is_one_line(tmp_path, synthetic_root, capsys):
    assert train(tmp_path, synthetic_root, "train.epochs=1") == 0
    run = tmp_path / "synthetic"
    (run / "summary.json").unlink()
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:500])
    capsys.readouterr()
    assert train(tmp_path, synthetic_root, "train.epochs=1") == 2
    assert f"{last}: not a readable checkpoint" in one_error_line(capsys)
    assert not (run / "FAILED").exists()  # a refused resume leaves the run as it was


def test_val_every_validates_every_nth_epoch_and_the_last_without_changing_training(
    tmp_path, synthetic_root, monkeypatch, capsys
):
    """train.val_every 2 over 3 epochs: validation at epochs 2 and 3 (the last always); epoch 1's row has the
    train keys only; the training numbers equal those of validating every epoch; an interrupted run resumes
    after an epoch without validation to the same numbers."""
    assert train(tmp_path / "every", synthetic_root, "train.epochs=3") == 0
    interrupt_after_epoch(monkeypatch, 1)
    assert train(tmp_path / "second", synthetic_root, "train.epochs=3", "train.val_every=2") == 130
    monkeypatch.undo()
    assert train(tmp_path / "second", synthetic_root, "train.epochs=3", "train.val_every=2") == 0
    out = capsys.readouterr().out
    assert "(validation every 2 epochs)" in out and "resuming synthetic from epoch 1" in out
    every, second = rows(tmp_path / "every" / "synthetic"), rows(tmp_path / "second" / "synthetic")
    assert [r["epoch"] for r in second] == [1, 2, 3]
    assert not any(key.startswith("val/") for key in second[0])
    assert set(second[0]) == {key for key in every[0] if not key.startswith("val/")}
    for mine, reference in zip(second, every, strict=True):  # validation changes nothing in training
        assert {k: v for k, v in mine.items() if k != "time/epoch_s"} == {
            k: v for k, v in reference.items() if k != "time/epoch_s" and (k in mine)
        }
        assert set(mine) == set(reference) or mine["epoch"] == 1
    summary = json.loads((tmp_path / "second" / "synthetic" / "summary.json").read_text())
    assert summary["val_dice_epochs"] == [2, 3] and all(len(c) == 2 for c in summary["val_dice_curve"].values())
    reference = json.loads((tmp_path / "every" / "synthetic" / "summary.json").read_text())
    assert reference["val_dice_epochs"] == [1, 2, 3]
    assert summary["val_dice_curve"] == {p: c[1:] for p, c in reference["val_dice_curve"].items()}
    assert summary["best_epoch"] in (2, 3) and summary["val"] == reference["val"]


def test_compiled_training_step_trains_the_same_numbers_and_saves_plain_weights(tmp_path, synthetic_root, monkeypatch):
    """train.compile [model, loss] with torch.compile's eager backend (dynamo traces the step, no code
    generation: the suite keeps inductor off): the same losses and scores as without, and checkpoints
    whose keys are the model's own (no compile wrapper prefix)."""
    compiled = []

    def compile_eagerly(module, **kwargs):
        compiled.append(type(module).__name__)
        return real_compile(module, backend="eager", **kwargs)

    real_compile = torch.compile
    assert train(tmp_path / "plain", synthetic_root, "train.epochs=2") == 0
    monkeypatch.setattr(torch, "compile", compile_eagerly)
    assert train(tmp_path / "compiled", synthetic_root, "train.epochs=2", "train.compile=[model,loss]") == 0
    assert compiled == ["Unet", "Criterion"]
    for mine, reference in zip(
        rows(tmp_path / "compiled" / "synthetic"), rows(tmp_path / "plain" / "synthetic"), strict=True
    ):
        for key, value in reference.items():
            if key != "time/epoch_s" and isinstance(value, float):
                assert mine[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    state = checkpoint.load(tmp_path / "compiled" / "synthetic" / "checkpoints" / "best.pt")["model"]
    assert not any(key.startswith("_orig_mod") for key in state)


def test_amp_cpu_trains_in_bfloat16_with_a_float32_loss(tmp_path, synthetic_root, monkeypatch):
    """train.amp_cpu: the forward runs under CPU bfloat16 autocast (the logits are bfloat16), the criterion
    gets them and the loss it returns is float32; the run trains and validates."""
    from seg import engine
    from seg.losses import Criterion

    seen = []
    forward = Criterion.forward

    def record(self, logits, batch):
        out = forward(self, logits, batch)
        seen.append((logits.dtype, out[0].dtype))
        return out

    monkeypatch.setattr(Criterion, "forward", record)
    assert train(tmp_path, synthetic_root, "train.epochs=1", "train.amp_cpu=true") == 0
    assert seen and set(seen) == {(torch.bfloat16, torch.float32)}
    row = rows(tmp_path / "synthetic")[0]
    assert math.isfinite(row["train/loss"]) and row["val/dice"] is not None
    assert engine.autocast(engine.StepOptions(torch.device("cpu"))).__class__.__name__ == "nullcontext"
