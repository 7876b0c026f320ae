"""Tests for seg/apps/train.py (main), end to end on tiny synthetic data: the run files, every weighting,
determinism, W&B read-back.

Resume and faults: tests/test_training.py; bad input: tests/test_bad_input.py."""

import hashlib
import json
import math
import re

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, binary_dataset, write_config, write_png
from wandb_records import artifacts, config_values, history_rows, metric_definitions, run_info, summary_values

from seg.apps import audit as audit_app
from seg.apps import evaluate as evaluate_app
from seg.apps import train as train_app
from seg.cli import run_main
from seg.config import read_run_config

TINY = [
    "data.image_size=64",
    "train.batch_size=4",
    "train.max_steps_per_epoch=2",
    "data.max_val_images=3",
    "model.encoder=resnet18",
    "logging.wandb.log_images=2",
    "--no-progress",
]


def train(*args):
    return run_main(train_app.main, list(args))


def test_synthetic_run_writes_the_contract_files(tmp_path, synthetic_root, capsys):
    common = [
        "--config",
        str(REPO / "configs" / "synthetic.yaml"),
        f"run.out_dir={tmp_path}",
        f"data.root={synthetic_root}",
        "loss.weighting=per_channel",
        *TINY,
    ]
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
    curve = summary["val_dice_curve"]  # per threshold policy, one macro Dice per epoch (the budget check reads it)
    assert curve["0.5"] == [rows[0]["val/0.5/dice"]] and curve["tuned"] == [rows[0]["val/tuned/dice"]]
    provenance = summary["provenance"]  # where the numbers came from
    assert re.fullmatch(r"[0-9a-f]{40}", provenance["commit"]) and isinstance(provenance["dirty"], bool)
    assert provenance["command"] == "python scripts/train.py " + " ".join(common + ["train.epochs=1"])
    assert provenance["versions"]["torch"] == torch.__version__
    assert set(provenance["versions"]) >= {
        "python",
        "torch",
        "torchvision",
        "segmentation_models_pytorch",
        "timm",
        "albumentations",
        "opencv",
        "numpy",
        "wandb",
    }
    assert provenance["device"]["type"] == "cpu" and provenance["device"]["torch_threads"] >= 1
    assert "macro" in capsys.readouterr().out  # the results table

    # W&B offline run, read back from the files written
    history = history_rows(run)
    assert history and history[0]["val/dice"] == pytest.approx(rows[0]["val/dice"])
    assert list(run.glob("wandb/offline-run-*/files/media/images/**/*.mask.png"))
    assert config_values(run)["provenance"] == summary["provenance"]  # the W&B config carries it too
    logged = summary_values(run)  # the applied weights reach W&B too
    assert logged["pos_weight"] == pytest.approx(summary["pos_weight"])
    assert logged["effective_pos_weight"] == pytest.approx(summary["effective_pos_weight"])

    # a finished run prints its summary and exits 0; a changed config is refused with the keys
    # (interrupted runs, resume and more epochs: tests/test_training.py)
    assert train(*common, "train.epochs=1") == 0
    assert "already trained for 1 epochs" in capsys.readouterr().out
    assert train(*common, "train.epochs=1", "train.lr=0.5") == 2
    assert "differs in: train.lr" in capsys.readouterr().err


@pytest.mark.parametrize("weighting", ["none", "global", "per_batch", "class_map", "border_map"])
def test_every_weighting_trains_on_synthetic(tmp_path, synthetic_root, weighting):
    extra = ["loss.apply_as=weight", "loss.border.instances_from=instance"] if weighting.endswith("map") else []
    assert (
        train(
            "--config",
            str(REPO / "configs" / "synthetic.yaml"),
            f"run.out_dir={tmp_path}",
            f"data.root={synthetic_root}",
            f"loss.weighting={weighting}",
            "train.epochs=1",
            "logging.wandb.mode=disabled",
            "loss.normalize=true",
            *extra,
            *TINY,
        )
        == 0
    )
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


def test_training_is_deterministic_on_cpu(tmp_path, synthetic_root):
    """Twice the same numbers; the second run reads its images through a loader worker from images decoded
    once (data.keep_decoded): neither changes a number."""
    losses = []
    for out, loading in (("a", []), ("b", ["data.num_workers=1", "data.keep_decoded=true"])):
        assert (
            train(
                "--config",
                str(REPO / "configs" / "synthetic.yaml"),
                f"run.out_dir={tmp_path / out}",
                f"data.root={synthetic_root}",
                "train.epochs=1",
                "logging.wandb.mode=disabled",
                *loading,
                *TINY,
            )
            == 0
        )
        rows = [json.loads(line) for line in (tmp_path / out / "synthetic" / "metrics.jsonl").read_text().splitlines()]
        losses.append((rows[0]["train/loss"], rows[0]["val/loss"], rows[0]["val/dice"]))
    assert losses[0] == losses[1]


def test_training_reads_weights_from_an_audit_stats_file(tmp_path, synthetic_root, capsys):
    """loss.stats_file: per_channel weights come from the audit's mask_stats.json, recorded with its hash."""
    import hashlib

    audit_script = audit_app
    config = str(REPO / "configs" / "synthetic.yaml")
    assert (
        run_main(
            audit_script.main,
            [
                "--config",
                config,
                "--set",
                f"data.root={synthetic_root}",
                "--out",
                str(tmp_path / "audit"),
                "--no-progress",
            ],
        )
        == 0
    )
    stats_path = tmp_path / "audit" / "mask_stats.json"
    stats = json.loads(stats_path.read_text())
    assert (
        train(
            "--config",
            config,
            f"run.out_dir={tmp_path}",
            f"data.root={synthetic_root}",
            "train.epochs=1",
            "loss.weighting=per_channel",
            f"loss.stats_file={stats_path}",
            "logging.wandb.mode=disabled",
            *TINY,
        )
        == 0
    )
    summary = json.loads((tmp_path / "synthetic" / "summary.json").read_text())
    assert summary["pos_weight"] == pytest.approx([c["pos_weight"]["pixels"] for c in stats["channels"]], rel=1e-5)
    assert summary["stats_sha256"] == hashlib.sha256(stats_path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ loss.terms and data.sampling, end to end

ONE_STEP = [*TINY, "train.epochs=1", "train.max_steps_per_epoch=1", "logging.wandb.mode=disabled"]


def _tiny_set(root, fmt):
    """Four 40 px images with ``fmt`` masks (binary, index with ignore_index 9, instance with instances/) and
    the config that reads them."""
    if fmt == "index":
        rng = np.random.default_rng(0)
        for i in range(4):
            mask = np.zeros((40, 40), np.uint8)
            mask[5:15, 5:20], mask[25:30, 22:26] = 1, 2
            mask[:, :3] = 9  # ignored
            write_png(root / "images" / f"img{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            write_png(root / "masks" / f"img{i}.png", np.roll(mask, 3 * i, axis=0))
        data = "mask_format: index, classes: [bg, a, b], ignore_index: 9"
    else:
        binary_dataset(root, count=4, size=40)
        data = f"mask_format: {fmt}, classes: [fg], positive_values: [255]"
        if fmt == "instance":
            for i in range(4):
                labels = np.zeros((40, 40), np.uint16)
                mask = cv2.imread(str(root / "masks" / f"img{i}.png"), cv2.IMREAD_GRAYSCALE)
                labels[mask > 0] = 300 + i
                write_png(root / "instances" / f"img{i}.png", labels)
    text = f"run: {{name: {fmt}}}\ndata: {{root: {root}, {data}, synthetic: false}}\n"
    return write_config(root.parent / f"{fmt}.yaml", text)


def _train_loss(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    return rows[0]["train/loss"]


@pytest.mark.parametrize("fmt", ["multilabel", "binary", "index", "instance"])
def test_loss_terms_and_foreground_sampling_train_on_every_mask_format(tmp_path, synthetic_root, fmt):
    if fmt == "multilabel":
        source = ["--config", str(REPO / "configs" / "synthetic.yaml"), f"data.root={synthetic_root}"]
        name = "synthetic"
    else:
        source, name = ["--config", str(_tiny_set(tmp_path / "data", fmt)), "data.samples_per_epoch=8"], fmt
    code = train(
        *source,
        f"run.out_dir={tmp_path / 'runs'}",
        "--set",
        "loss.terms=[{name: dice}, {name: bce}]",
        "--set",
        "data.sampling=foreground",
        "data.foreground_fraction=1.0",
        *ONE_STEP,
    )
    assert code == 0
    run = tmp_path / "runs" / name
    assert (run / "summary.json").is_file()
    assert math.isfinite(_train_loss(run))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["sampling"] == "foreground" and config["data"]["foreground_fraction"] == 1.0
    assert [term["name"] for term in config["loss"]["terms"]] == ["dice", "bce"]
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    # one step: the loss is the sum of the terms (weights 1), each logged unweighted
    assert row["train/loss"] == pytest.approx(row["train/loss/dice"] + row["train/loss/bce"], rel=1e-5)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["loss_terms"] == [
        {"name": "dice", "weight": 1.0, "form": "batch", "smooth": 1.0},
        {"name": "bce", "weight": 1.0},
    ]
    assert summary["sampling"] == {
        "sampling": "foreground",
        "foreground_fraction": 1.0,
        "foreground_channel": "uniform",
    }


@pytest.mark.parametrize(
    "terms, extra",
    [
        ("[{name: lovasz}]", []),
        ("[{name: focal, gamma: 2.0}]", ["loss.weighting=per_channel"]),
        ("[{name: tversky, alpha: 0.3, beta: 0.7}]", []),
    ],
    ids=["lovasz", "focal-per_channel", "tversky"],
)
def test_each_loss_term_trains_on_synthetic(tmp_path, synthetic_root, terms, extra):
    code = train(
        "--config",
        str(REPO / "configs" / "synthetic.yaml"),
        f"run.out_dir={tmp_path}",
        f"data.root={synthetic_root}",
        "--set",
        f"loss.terms={terms}",
        *extra,
        *ONE_STEP,
    )
    assert code == 0
    assert math.isfinite(_train_loss(tmp_path / "synthetic"))


def test_weighting_without_a_weighted_term_is_refused(tmp_path, capsys):
    code = train(
        "--config",
        str(REPO / "configs" / "synthetic.yaml"),
        f"run.out_dir={tmp_path}",
        "--set",
        "loss.terms=[{name: dice}]",
        "--set",
        "loss.weighting=global",
        "logging.wandb.mode=disabled",
        "--no-progress",
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "loss.weighting" in err, err
    assert not any(tmp_path.iterdir())  # refused before a run directory exists


# ------------------------------------------------------------------ W&B, read back from the offline files


def test_wandb_run_of_training_and_its_evaluation(tmp_path):
    """Index masks, 2 epochs of 2 steps, a step row every step: groups, names, job types, step metrics,
    the best val/dice, overlays as one labelled pair, checkpoint artifacts and the evaluation's lineage."""
    config = _tiny_set(tmp_path / "data", "index")
    code = train(
        "--config",
        str(config),
        "data.samples_per_epoch=8",
        f"run.out_dir={tmp_path / 'runs'}",
        *TINY,
        "train.epochs=2",
        "logging.log_every=1",
        "logging.wandb.name={loss.weighting}-s{run.seed}",
    )
    assert code == 0
    run = tmp_path / "runs" / "index"
    assert run_info(run) == {"name": "none-s0", "group": "index", "job_type": "train", "tags": ["none"]}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    history = history_rows(run)
    steps = [row for row in history if "trainer/step" in row]
    assert [row["trainer/step"] for row in steps] == [1, 2, 3, 4]
    assert not any("epoch" in row for row in steps)
    for epoch, row in enumerate(rows):  # the epoch's loss is the mean of its steps' losses
        losses = [step["step/loss"] for step in steps[2 * epoch : 2 * epoch + 2]]
        assert np.mean(losses) == pytest.approx(row["train/loss"], rel=1e-6)
    assert [step["step/weight"] for step in steps] == [1.0] * 4  # loss.weighting none
    assert steps[-1]["step/lr"] == pytest.approx(rows[-1]["lr"])
    assert [row["epoch"] for row in history if "val/dice" in row] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    logged = summary_values(run)
    assert logged["val/dice"] == {"max": max(row["val/dice"] for row in rows)}
    assert logged["best_epoch"] == summary["best_epoch"]
    assert metric_definitions(run)["val/dice"]["summary"] == ["max"]
    overlays = [row for row in history if "val/examples/all_masks" in row]
    assert [row["epoch"] for row in overlays] == [1, 2]
    assert [set(m) for m in overlays[0]["val/examples/all_masks"]] == [{"predictions", "ground_truth"}]
    labels = config_values(run)["_wandb"]["mask/class_labels"]["val/examples_wandb_delimeter_predictions"]["value"]
    assert labels == {"0": "none", "1": "bg", "2": "a", "3": "b"}

    models = artifacts(run)
    assert [(m["name"], m["files"]) for m in models] == [("index-model", ["best.pt"]), ("index-model", ["last.pt"])]
    assert "best" in models[0]["aliases"] and "latest" in models[1]["aliases"]
    saved = read_run_config(run / "config.yaml")
    digest = hashlib.sha256(json.dumps(saved.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
    best_row = rows[summary["best_epoch"] - 1]
    assert models[0]["metadata"] == {
        "config_hash": digest,
        "commit": summary["provenance"]["commit"],
        "run": "index",
        "epoch": summary["best_epoch"],
        "val_dice": best_row["val/dice"],
        "file": "best.pt",
        "sha256": hashlib.sha256((run / "checkpoints" / "best.pt").read_bytes()).hexdigest(),
    }
    assert models[1]["metadata"]["epoch"] == 2 and models[1]["metadata"]["val_dice"] == rows[-1]["val/dice"]

    assert run_main(evaluate_app.main, ["--run", str(run), "--overlays", "1", "--no-progress"]) == 0
    evaluation = run / "eval" / "val"
    assert run_info(evaluation) == {"name": "none-s0-eval-val", "group": "index", "job_type": "eval", "tags": ["eval"]}
    assert config_values(evaluation)["checkpoint"] == {
        "artifact": "index-model:best",
        "sha256": hashlib.sha256((run / "checkpoints" / "best.pt").read_bytes()).hexdigest(),
    }
    (row,) = [row for row in history_rows(evaluation) if "eval/val/examples/all_masks" in row]
    assert [set(m) for m in row["eval/val/examples/all_masks"]] == [{"predictions", "ground_truth"}]


@pytest.mark.cuda
@pytest.mark.parametrize("weighting", ["per_batch", "border_map"])
def test_training_and_evaluation_on_cuda_with_workers_and_kept_images(tmp_path, synthetic_root, weighting):
    """On a GPU: bf16 autocast, channels_last, two loader workers over images decoded once, pinned batches;
    the run records the GPU, and evaluate.py scores its checkpoint there."""
    extra = ["loss.apply_as=weight", "loss.border.instances_from=instance"] if weighting.endswith("map") else []
    common = ["--config", str(REPO / "configs" / "synthetic.yaml"), f"run.out_dir={tmp_path}"]
    code = train(
        *common,
        f"data.root={synthetic_root}",
        f"loss.weighting={weighting}",
        "train.device=cuda",
        "train.amp=true",
        "train.epochs=2",
        "data.num_workers=2",
        "data.keep_decoded=true",
        "logging.wandb.mode=disabled",
        *extra,
        *TINY,
    )
    assert code == 0
    summary = json.loads((tmp_path / "synthetic" / "summary.json").read_text())
    assert summary["provenance"]["device"]["type"] == "cuda" and summary["epochs_completed"] == 2
    assert all(math.isfinite(v) for v in summary["val_dice_curve"])
    run = tmp_path / "synthetic"
    assert run_main(evaluate_app.main, ["--run", str(run), "--device", "cuda", "--no-progress"]) == 0
