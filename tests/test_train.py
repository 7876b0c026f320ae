"""End to end on tiny synthetic data: run files as the contract says, resume, W&B read-back, bad input."""

import json

import numpy as np
import pytest
import yaml

from seg.cli import run_main
from seg.data.synthetic import generate

from conftest import REPO, binary_dataset, write_config, write_png
from wandb_records import history_rows, summary_values

import importlib.util

_spec = importlib.util.spec_from_file_location("train_script", REPO / "scripts" / "train.py")
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)

TINY = ["data.image_size=64", "train.batch_size=4", "train.max_steps_per_epoch=2", "data.max_val_images=3",
        "model.encoder=resnet18", "logging.wandb.log_images=2", "--no-progress"]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "synthetic", count=12, size=72)


def train(*args):
    return run_main(train_script.main, list(args))


def test_synthetic_run_writes_the_contract_files_and_resumes(tmp_path, synthetic_root, capsys):
    common = ["--config", str(REPO / "configs" / "synthetic.yaml"), f"run.out_dir={tmp_path}",
              f"data.root={synthetic_root}", "loss.weighting=per_channel", *TINY]
    assert train(*common, "train.epochs=1") == 0
    run = tmp_path / "synthetic"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["loss"]["weighting"] == "per_channel" and len(config["data"]["val_stems"]) == 2  # 20% of 12
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    for key in ("train/loss", "val/loss", "val/dice", "val/iou", "val/dice/cell", "val/iou/speck"):
        assert key in rows[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["weighting"] == "per_channel" and summary["best_epoch"] == 1
    assert len(summary["pos_weight"]) == 3 and len(summary["effective_pos_weight"]) == 3
    assert summary["pos_weight"] == pytest.approx(summary["effective_pos_weight"], rel=1e-4)
    assert set(summary["val"]["per_channel"]) == {"cell", "nucleus", "speck"}
    assert 0.0 <= summary["val"]["dice"] <= 1.0
    assert "macro" in capsys.readouterr().out  # the results table

    # W&B offline run, read back from the files written
    history = history_rows(run)
    assert history and history[0]["val/dice"] == pytest.approx(rows[0]["val/dice"])
    assert list(run.glob("wandb/offline-run-*/files/media/images/**/*.mask.png"))
    logged = summary_values(run)  # the applied weights reach W&B too
    assert logged["pos_weight"] == pytest.approx(summary["pos_weight"])
    assert logged["effective_pos_weight"] == pytest.approx(summary["effective_pos_weight"])

    # resume: same run name, more epochs, continues from the saved epoch
    last_mtime = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert train(*common, "train.epochs=2") == 0
    out = capsys.readouterr().out
    assert "resuming synthetic from epoch 1" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns != last_mtime
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 2
    assert len(history_rows(run)) == 2

    # a finished run prints its summary and exits 0; a changed config is refused with the keys
    assert train(*common, "train.epochs=2") == 0
    assert "already trained for 2 epochs" in capsys.readouterr().out
    assert train(*common, "train.epochs=2", "train.lr=0.5") == 2
    assert "differs in: train.lr" in capsys.readouterr().err


@pytest.mark.parametrize("weighting", ["none", "global", "per_batch", "class_map", "border_map"])
def test_every_weighting_trains_on_synthetic(tmp_path, synthetic_root, weighting):
    extra = ["loss.apply_as=weight", "loss.border.instances_from=instance"] if weighting.endswith("map") else []
    assert train("--config", str(REPO / "configs" / "synthetic.yaml"), f"run.out_dir={tmp_path}",
                 f"data.root={synthetic_root}", f"loss.weighting={weighting}", "train.epochs=1",
                 "logging.wandb.mode=disabled", "loss.normalize=true", *extra, *TINY) == 0
    summary = json.loads((tmp_path / "synthetic" / "summary.json").read_text())
    assert summary["weighting"] == weighting
    assert len(summary["effective_pos_weight"]) == 3
    if weighting == "none":
        assert summary["pos_weight"] is None and summary["effective_pos_weight"] == [1.0, 1.0, 1.0]
    if weighting == "global":
        assert isinstance(summary["pos_weight"], float)
    if weighting == "per_batch":
        assert len(summary["pos_weight"]) == 3
    if weighting.endswith("map"):
        assert set(summary["weight_map_stats"]) == {"cell", "nucleus", "speck"}
        assert summary["weight_map_stats"]["cell"]["max"] >= summary["weight_map_stats"]["cell"]["mean"] > 0


# ------------------------------------------------------------------ bad input: exit 2, one line, nothing written


def bad_run(tmp_path, capsys, *args):
    code = train(*args, f"run.out_dir={tmp_path / 'runs'}", "logging.wandb.mode=disabled", *TINY)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing half-written
    return err


def binary_config(tmp_path, root, name="cfg.yaml"):
    return str(write_config(tmp_path / name, f"""
data:
  root: {root}
  mask_format: binary
  classes: [x]
  positive_values: [255]
  synthetic: false
"""))


def test_bad_config_inputs(tmp_path, capsys):
    assert "nope.yaml: config file not found" in bad_run(tmp_path, capsys, "--config", str(tmp_path / "nope.yaml"))
    unknown = write_config(tmp_path / "u.yaml", "train:\n  epoch: 3\n")
    assert "key 'train.epoch': unknown key" in bad_run(tmp_path, capsys, "--config", str(unknown))
    wrong = write_config(tmp_path / "w.yaml", "train:\n  epochs: many\n")
    assert "key 'train.epochs'" in bad_run(tmp_path, capsys, "--config", str(wrong))
    assert "unknown key 'train.nope'" in bad_run(tmp_path, capsys, "--config", str(unknown), "train.nope=1")


def test_bad_data_inputs(tmp_path, capsys):
    root = binary_dataset(tmp_path / "d", count=4)
    config = binary_config(tmp_path, root)
    assert "data folder not found" in bad_run(tmp_path, capsys, "--config", binary_config(tmp_path, tmp_path / "x", "missing.yaml"))

    write_png(root / "images" / "extra.png", np.zeros((40, 40, 3), np.uint8))
    assert "extra.png: image has no mask" in bad_run(tmp_path, capsys, "--config", config)
    (root / "images" / "extra.png").unlink()

    write_png(root / "masks" / "orphan.png", np.zeros((40, 40), np.uint8))
    assert "orphan.png: mask has no image" in bad_run(tmp_path, capsys, "--config", config)
    (root / "masks" / "orphan.png").unlink()

    good = (root / "masks" / "img1.png").read_bytes()
    write_png(root / "masks" / "img1.png", np.zeros((30, 40), np.uint8))
    assert "img1.png: size 40x30 differs from its image" in bad_run(tmp_path, capsys, "--config", config)

    write_png(root / "masks" / "img1.png", np.full((40, 40), 128, np.uint8))
    assert "img1.png: value(s) 128 not valid for a binary mask" in bad_run(tmp_path, capsys, "--config", config)

    (root / "masks" / "img1.png").write_bytes(good[:40])
    assert "img1.png: cannot read" in bad_run(tmp_path, capsys, "--config", config)


def test_index_class_out_of_range_is_refused(tmp_path, capsys):
    root = tmp_path / "d"
    write_png(root / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_png(root / "images" / "b.png", np.zeros((8, 8, 3), np.uint8))
    write_png(root / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    write_png(root / "masks" / "b.png", np.full((8, 8), 14, np.uint8))
    config = write_config(tmp_path / "c.yaml", f"""
data: {{root: {root}, mask_format: index, classes: [a, b, c, d, e, f, g, h, i, j, k], ignore_index: 11,
        synthetic: false}}
""")
    assert "b.png: value(s) 14 not valid for an index mask" in bad_run(
        tmp_path, capsys, "--config", str(config))


def test_pretrained_weights_offline_fail_clearly(tmp_path, capsys, synthetic_root):
    err = bad_run(tmp_path, capsys, "--config", str(REPO / "configs" / "synthetic.yaml"),
                  f"data.root={synthetic_root}", "model.encoder_weights=imagenet")
    assert "model.encoder_weights" in err and "offline" in err


def test_training_is_deterministic_on_cpu(tmp_path, synthetic_root):
    losses = []
    for out in ("a", "b"):
        assert train("--config", str(REPO / "configs" / "synthetic.yaml"), f"run.out_dir={tmp_path / out}",
                     f"data.root={synthetic_root}", "train.epochs=1", "logging.wandb.mode=disabled", *TINY) == 0
        rows = [json.loads(line) for line in (tmp_path / out / "synthetic" / "metrics.jsonl").read_text().splitlines()]
        losses.append((rows[0]["train/loss"], rows[0]["val/loss"], rows[0]["val/dice"]))
    assert losses[0] == losses[1]


def test_training_reads_weights_from_an_audit_stats_file(tmp_path, synthetic_root, capsys):
    """loss.stats_file: per_channel weights come from the audit's mask_stats.json, recorded with its hash."""
    import hashlib

    spec = importlib.util.spec_from_file_location("audit_script", REPO / "scripts" / "audit_masks.py")
    audit_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(audit_script)
    config = str(REPO / "configs" / "synthetic.yaml")
    assert run_main(audit_script.main, ["--config", config, "--set", f"data.root={synthetic_root}",
                                        "--out", str(tmp_path / "audit"), "--no-progress"]) == 0
    stats_path = tmp_path / "audit" / "mask_stats.json"
    stats = json.loads(stats_path.read_text())
    assert train("--config", config, f"run.out_dir={tmp_path}", f"data.root={synthetic_root}", "train.epochs=1",
                 "loss.weighting=per_channel", f"loss.stats_file={stats_path}", "logging.wandb.mode=disabled",
                 *TINY) == 0
    summary = json.loads((tmp_path / "synthetic" / "summary.json").read_text())
    assert summary["pos_weight"] == pytest.approx([c["pos_weight"]["pixels"] for c in stats["channels"]], rel=1e-5)
    assert summary["stats_sha256"] == hashlib.sha256(stats_path.read_bytes()).hexdigest()


def test_torchrun_with_several_processes_is_refused_clearly(tmp_path, capsys, monkeypatch, synthetic_root):
    monkeypatch.setenv("WORLD_SIZE", "2")
    err = bad_run(tmp_path, capsys, "--config", str(REPO / "configs" / "synthetic.yaml"), f"data.root={synthetic_root}")
    assert "DDP" in err and "not implemented" in err
