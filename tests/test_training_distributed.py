"""Tests for seg/training.py under torchrun: DDP with 2 gloo processes on the CPU, end to end.

One uninterrupted 2-process run (per_batch weighting, 3 epochs, 5 validation images in batches of 4 so
that the shards are uneven) is shared by every test that only reads it. Pinned:

- it writes one run directory (one metrics row per epoch, one summary), and rank 0 alone prints;
- its validation scores equal a single-process evaluation of its last checkpoint, exactly (the counts
  are summed, never averaged; every image is evaluated once);
- per_batch applied the weight of the counts of the whole global batch (worked out here from the crops
  of both shards), not of one shard;
- killed with kill -9 (launcher and workers) after its first checkpoint and rerun, a run ends with the
  same metrics as the uninterrupted one;
- the dataset-level pos_weight (global, per channel) of a 2-process run equals a single-process run's,
  and a run resumes across process counts (2 -> 1 and 1 -> 2);
- a bad config or bad data is reported once, by rank 0, in one line; ``train.py --nproc 2`` exits with
  the failing process's code (torchrun itself always exits 1 and adds its report); a failure inside
  one process is that process's one line alone; a divergence stops both with exit 3 and one line.

On a GPU machine, the last tests run gloo processes on one GPU and NCCL processes one per GPU.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_TRAIN, interrupt_after_epoch, write_png

from seg.apps import train as train_app
from seg.cli import run_main
from seg.config import load_config, read_run_config
from seg.data.shards import GlobalBatchShard, epoch_seed
from seg.run_data import build_datasets, prepare_data
from seg.run_evaluation import evaluate_run

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
CONFIG = str(REPO / "configs" / "synthetic.yaml")
# 12 images: 7 train, 5 validation (batches of 4: rank 0 evaluates 4 images, rank 1 one)
DDP = [*TINY_TRAIN, "data.val_fraction=0.4", "data.max_val_images=null", "train.epochs=3"]
SHARED = [*DDP, "loss.weighting=per_batch"]


def command(out: Path, root: Path, name: str, *overrides: str) -> list[str]:
    return [CONFIG, f"run.out_dir={out}", f"data.root={root}", f"run.name={name}", *overrides]


def torchrun(out: Path, root: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    args = [*TORCHRUN, str(REPO / "scripts" / "train.py"), "--config", *command(out, root, name, *overrides)]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=_env())


def _env() -> dict:
    """The workers import this checkout's seg; its dependencies may come from PYTHONPATH (a GPU machine's)."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths)}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_times(row: dict) -> dict:
    return {key: value for key, value in row.items() if not key.startswith("time/")}


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, synthetic_root):
    """The uninterrupted 2-process run: (run directory, its torchrun result)."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(out, synthetic_root, "shared", *SHARED)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "shared", done


def test_two_processes_write_one_run_directory(shared_run):
    run, done = shared_run
    assert [p.name for p in run.parent.iterdir() if not p.name.startswith(".")] == ["shared"]
    assert [row["epoch"] for row in rows(run)] == [1, 2, 3]  # one row per epoch: rank 0 alone writes
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and summary["weighting"] == "per_batch"
    assert done.stdout.count("epoch 3/3:") == 1 and done.stdout.count("weighting: per_batch") == 1
    assert "Traceback" not in done.stderr and not error_lines(done.stderr)
    assert summary["provenance"]["device"]["processes"] == 2
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in saved["model"])  # the unwrapped model: loads anywhere


def test_validation_equals_a_single_process_evaluation_of_the_checkpoint(shared_run):
    run, _ = shared_run
    val = json.loads((run / "summary.json").read_text())["val"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process (OMP_NUM_THREADS=1): the same float rounding
    try:
        single = evaluate_run(run, "val", wandb_mode="disabled", progress=False, which="last", overlays=0)
    finally:
        torch.set_num_threads(threads)
    single = single["metrics"]
    assert val["num_images"] == single["num_images"] == 5  # none dropped, none counted twice
    for key in ("dice", "iou", "micro", "per_image", "per_channel", "empty_image_fp_rate", "thresholds"):
        assert val[key] == single[key], key  # scores of summed integer counts: exact
    for policy, block in val["by_threshold"].items():
        assert {k: v for k, v in block.items() if k != "note"} == {
            k: v for k, v in single["by_threshold"][policy].items() if k != "note"
        }
    for variant in ("raw", "prior_corrected"):  # float sums, added in another order
        assert val["ece"][variant] == pytest.approx(single["ece"][variant], abs=1e-12)


def global_batch_weights(run: Path, epoch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """By hand: per_batch's pos_weight neg/pos (clamped) for each step of ``epoch``, from the counts of
    the whole global batch and (for contrast) of rank 0's half of it; NaN where a channel is undefined."""
    cfg = read_run_config(run / "config.yaml")
    train_set, _ = build_datasets(cfg, prepare_data(cfg, progress=False), None)
    train_set.set_epoch(epoch)
    generator = torch.Generator().manual_seed(epoch_seed(cfg.run.seed, epoch))
    order = torch.utils.data.DataLoader(
        range(len(train_set)), batch_size=cfg.train.batch_size, shuffle=True, generator=generator, drop_last=True
    )
    low, high = cfg.loss.clamp
    whole, half = [], []
    for step, batch in enumerate(order):
        if step == cfg.train.max_steps_per_epoch:
            break
        items = [train_set[int(i)] for i in batch]
        for share, out in ((items, whole), (items[: len(items) // 2], half)):
            target = torch.stack([item["target"] for item in share]).double()
            valid = torch.stack([item["valid"] for item in share]).double()
            pos = (target * valid).sum(dim=(0, 2, 3))
            neg = valid.sum() - pos
            weight = (neg / pos).clamp(low, high)
            out.append(torch.where((pos > 0) & (neg > 0), weight, torch.nan))
    return whole, half


def test_per_batch_uses_the_counts_of_the_global_batch(shared_run):
    run, _ = shared_run
    whole, half = global_batch_weights(run, epoch=3)
    pos_weight = torch.tensor(json.loads((run / "summary.json").read_text())["pos_weight"], dtype=torch.float64)
    defined = ~torch.stack(whole).isnan().any(dim=0)
    assert defined.sum() >= 2  # cell and nucleus are in every global batch
    expected = torch.stack(whole).mean(dim=0)  # summary.json: the epoch's mean per-channel weight
    assert torch.allclose(pos_weight[defined], expected[defined], rtol=1e-5)
    one_shard = torch.stack(half).mean(dim=0)
    assert not torch.allclose(pos_weight[defined], one_shard[defined], rtol=1e-3)  # the check can fail


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_after_first_checkpoint(out: Path, root: Path, name: str, *overrides: str) -> Path:
    """Start a 2-process run, and kill -9 the whole job (launcher and workers) once its first last.pt is
    written; the run directory."""
    args = [*TORCHRUN, str(REPO / "scripts" / "train.py"), "--config", *command(out, root, name, *overrides)]
    launcher = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    last = out / name / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.is_file() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in [*descendants(launcher.pid), launcher.pid]:  # the whole job, at once
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    launcher.wait()
    assert last.is_file() and not (out / name / "summary.json").is_file(), "killed too late"
    return out / name


def test_a_run_killed_with_sigkill_resumes_to_the_same_metrics(shared_run, tmp_path, synthetic_root):
    run, _ = shared_run
    killed = kill_after_first_checkpoint(tmp_path, synthetic_root, "killed", *SHARED)
    done = torchrun(tmp_path, synthetic_root, "killed", *SHARED)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming killed from epoch" in done.stdout
    assert [without_times(r) for r in rows(killed)] == [without_times(r) for r in rows(run)]
    resumed, uninterrupted = (json.loads((r / "summary.json").read_text()) for r in (killed, run))
    assert resumed["val"] == uninterrupted["val"] and resumed["pos_weight"] == uninterrupted["pos_weight"]


def saved_pos_weight(run: Path) -> float | list[float]:
    """pos_weight as of the run's last checkpoint (the summary it carries)."""
    return json.loads(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["summary"])["pos_weight"]


@pytest.mark.parametrize("weighting", ["global", "per_channel"])
def test_two_processes_have_the_dataset_pos_weight_of_one_and_resume_with_one(
    tmp_path, synthetic_root, capsys, weighting
):
    """A 2-process run's dataset-level pos_weight (rank 0's counts) is a single-process run's, exactly;
    killed after a checkpoint, the 2-process run is finished by one process."""
    overrides = [*DDP, f"loss.weighting={weighting}"]
    run = kill_after_first_checkpoint(tmp_path / "two", synthetic_root, "mixed", *overrides)
    two = saved_pos_weight(run)
    assert run_main(train_app.main, ["--config", *command(tmp_path / "one", synthetic_root, "mixed", *overrides)]) == 0
    one = json.loads((tmp_path / "one" / "mixed" / "summary.json").read_text())["pos_weight"]
    assert two == one and isinstance(one, float) == (weighting == "global")  # one value, or one per channel
    capsys.readouterr()
    assert run_main(train_app.main, ["--config", *command(tmp_path / "two", synthetic_root, "mixed", *overrides)]) == 0
    assert "resuming mixed from epoch" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and [row["epoch"] for row in rows(run)] == [1, 2, 3]


def test_a_single_process_run_is_finished_by_two(tmp_path, synthetic_root, monkeypatch):
    interrupt_after_epoch(monkeypatch, 1)
    assert run_main(train_app.main, ["--config", *command(tmp_path, synthetic_root, "mixed", *SHARED)]) == 130
    monkeypatch.undo()
    done = torchrun(tmp_path, synthetic_root, "mixed", *SHARED)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming mixed from epoch 1" in done.stdout
    summary = json.loads((tmp_path / "mixed" / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and [row["epoch"] for row in rows(tmp_path / "mixed")] == [1, 2, 3]


@pytest.fixture
def bad_root(tmp_path, synthetic_root) -> Path:
    """The synthetic set with one mask value outside the format (128 in a 0/255 mask): found by rank 0
    while it counts the training masks, before anything is written."""
    root = Path(shutil.copytree(synthetic_root, tmp_path / "bad_data"))
    mask = sorted((root / "masks" / "cell").glob("*.png"))[0]
    write_png(mask, np.full((72, 72), 128, np.uint8))
    return root


def test_bad_data_is_reported_once_by_rank_0(tmp_path, bad_root):
    done = torchrun(tmp_path, bad_root, "bad", *DDP)
    assert done.returncode != 0  # torchrun's own code (1), and its ChildFailedError report
    assert len(error_lines(done.stderr)) == 1 and "128" in error_lines(done.stderr)[0], done.stderr[-2000:]
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [("", "128"), ("train.batch_size=3", "train.batch_size: 3 does not divide by the 2 processes")],
)
def test_nproc_exits_with_the_failing_process_code_and_one_line(tmp_path, bad_root, override, message):
    args = [str(REPO / "scripts" / "train.py"), "--config", *command(tmp_path, bad_root, "bad", *DDP)]
    args += [override] if override else []
    done = subprocess.run([sys.executable, *args, "--nproc", "2"], capture_output=True, text=True, env=_env())
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == error_lines(done.stderr) and len(error_lines(done.stderr)) == 1
    assert message in done.stderr and not (tmp_path / "bad").exists()


def test_a_failure_in_one_process_stops_every_process_with_its_one_line(tmp_path, synthetic_root):
    """An image only rank 1 reads in the first step is unreadable (its header is whole, so the checks
    before training pass): rank 1 prints its one line; rank 0, whose collective then fails, prints nothing."""
    root = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    overrides = [*DDP, "data.samples_per_epoch=8", f"data.root={root}", "logging.wandb.mode=disabled"]
    cfg = load_config(CONFIG, [o for o in overrides if o != "--no-progress"])
    samples = prepare_data(cfg, progress=False).train_samples
    first = []
    for rank in (0, 1):
        shard = GlobalBatchShard(cfg.data.samples_per_epoch, cfg.train.batch_size, cfg.run.seed, rank, 2)
        shard.set_epoch(1)
        first.append({i % len(samples) for i in list(shard)[: shard.per_rank]})
    victim = samples[min(first[1] - first[0])].image
    victim.write_bytes(victim.read_bytes()[:400])
    args = [str(REPO / "scripts" / "train.py"), "--config", *command(tmp_path, root, "broken", *overrides)]
    done = subprocess.run([sys.executable, *args, "--nproc", "2"], capture_output=True, text=True, env=_env())
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {victim}: cannot read the image (missing, corrupt or not an image file)"
    ]


def test_divergence_stops_every_process_with_exit_3_and_one_line(tmp_path, synthetic_root):
    """lr=1e6: the loss turns non-finite; the flag is shared, so both processes stop at the same step and
    rank 0 alone reports it (which process saw it first is pinned in tests/test_distributed.py)."""
    args = [str(REPO / "scripts" / "train.py"), "--config", *command(tmp_path, synthetic_root, "nan", *DDP)]
    done = subprocess.run(
        [sys.executable, *args, "train.lr=1e6", "--nproc", "2"], capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert lines == error_lines(done.stderr) and len(lines) == 1 and "training diverged" in lines[0]
    assert (tmp_path / "nan" / "FAILED").is_file() and not (tmp_path / "nan" / "summary.json").exists()


def test_nproc_trains_like_torchrun(tmp_path, synthetic_root):
    args = [str(REPO / "scripts" / "train.py"), "--config", *command(tmp_path, synthetic_root, "nproc", *DDP)]
    done = subprocess.run(
        [sys.executable, *args, "train.epochs=1", "--nproc", "2"], capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch 1/1:") == 1
    assert json.loads((tmp_path / "nproc" / "summary.json").read_text())["epochs_completed"] == 1


@pytest.mark.cuda
def test_two_gloo_processes_on_cuda_tensors(tmp_path, synthetic_root):
    """NCCL refuses two ranks on one GPU; gloo's processes share it."""
    done = torchrun(
        tmp_path, synthetic_root, "cuda", *DDP, "train.epochs=1", "train.device=cuda", "train.dist_backend=gloo"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "cuda" / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["provenance"]["device"]["type"] == "cuda"


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL: one process per GPU)")
def test_two_nccl_processes_one_per_gpu_with_sync_batchnorm(tmp_path, synthetic_root):
    done = torchrun(tmp_path, synthetic_root, "nccl", *DDP, "train.epochs=1", "train.device=cuda")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "nccl" / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["provenance"]["device"]["type"] == "cuda"
