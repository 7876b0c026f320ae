"""Tests for seg/run_evaluation.py, driven through scripts/evaluate.py's main on a tiny run made without training
(config.yaml + best.pt written directly): the files it writes, numbers equal to a direct Evaluator pass,
W&B read-back, and exit code 2 for a missing run or test split."""

import json

import pytest
import torch
from conftest import REPO, assert_close_tree
from wandb_records import history_rows

from seg import checkpoint
from seg.apps import evaluate as evaluate_app
from seg.cli import run_main
from seg.config import config_to_dict, load_config, replace, save_config
from seg.data.dataset import pad_collate
from seg.data.synthetic import generate
from seg.models import build_model
from seg.run_data import prepare_data
from seg.run_evaluation import split_dataset
from seg.scoring.thresholds import log_q
from seg.scoring.validation import Evaluator

EFFECTIVE = [1.5, 4.0, 20.0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as training leaves it: config.yaml with the val split, checkpoints/best.pt."""
    root = generate(tmp_path_factory.mktemp("data") / "synthetic", count=8, size=40)
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        REPO / "configs" / "synthetic.yaml",
        [
            f"run.out_dir={out}",
            f"data.root={root}",
            "model.encoder=resnet18",
            "train.device=cpu",
            "train.batch_size=2",
            "metrics.threshold=tuned",
            "logging.wandb.mode=offline",
        ],
    )
    cfg = replace(cfg, data={"val_stems": prepare_data(cfg, progress=False).val_stems})
    run = out / cfg.run.name
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", None, 3)
    checkpoint.save_atomic(
        {"model": model.state_dict(), "config": config_to_dict(cfg), "epoch": 3, "effective_pos_weight": EFFECTIVE},
        run / "checkpoints" / "best.pt",
    )
    return run


def evaluate(*args):
    return run_main(evaluate_app.main, list(args))


def test_evaluate_writes_results_tables_plots_and_wandb(run_dir, capsys):
    assert evaluate("--run", str(run_dir), "--overlays", "2", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "| channel | Dice @ 0.5" in out and "eval-val.json" in out
    for name in ("eval-val.json", "eval-val.md", "eval-val-overlays.png", "eval-val-reliability.png"):
        assert (run_dir / name).is_file(), name
    result = json.loads((run_dir / "eval-val.json").read_text())
    assert result["split"] == "val" and result["epoch"] == 3 and result["effective_pos_weight"] == EFFECTIVE
    assert result["provenance"]["command"] == f"python scripts/evaluate.py --run {run_dir} --overlays 2 --no-progress"
    assert result["provenance"]["versions"]["torch"] == torch.__version__ and result["provenance"]["commit"]
    metrics = result["metrics"]
    assert metrics["threshold"] == "tuned" and metrics["num_images"] == 2  # 20% of 8 images
    assert set(metrics["by_threshold"]) == {"0.5", "prior_corrected", "tuned"}

    # the same numbers as a direct pass of the checkpoint over the recorded val split
    from seg.config import read_yaml, validate

    cfg = validate(read_yaml(run_dir / "config.yaml"), "config.yaml")
    model = build_model("Unet", "resnet18", None, 3).to(memory_format=torch.channels_last)
    model.load_state_dict(checkpoint.load(run_dir / "checkpoints" / "best.pt")["model"])
    model.eval()
    evaluator = Evaluator(3, "cpu", log_q(EFFECTIVE), cfg.metrics.empty)
    loader = torch.utils.data.DataLoader(split_dataset(cfg, "val")[0], batch_size=2, collate_fn=pad_collate)
    with torch.no_grad():
        for batch in loader:
            image = batch["image"].contiguous(memory_format=torch.channels_last)
            evaluator.update(model(image), batch["target"], batch["valid"])
    expected = json.loads(json.dumps(evaluator.compute(list(cfg.data.classes), "tuned")))
    # the second pass applies the thresholds chosen by the first: the same scores, another note
    assert metrics["by_threshold"]["tuned"].pop("note").startswith("thresholds tuned on val (2 images, stems sha256 ")
    expected["by_threshold"]["tuned"].pop("note")
    metrics.pop("note"), expected.pop("note")  # metrics.threshold is tuned: the top level is that block
    ece, expected_ece = metrics.pop("ece"), expected.pop("ece")
    assert_close_tree(metrics, expected)  # two float32 code paths: equal to float32 precision
    for variant in ("raw", "prior_corrected"):  # Platt-scaled is the extra variant
        assert_close_tree(ece[variant], expected_ece[variant])
        assert_close_tree(ece["brier"][variant], expected_ece["brier"][variant])
    assert set(ece["brier"]) == {"raw", "prior_corrected", "platt"}
    assert set(ece["platt_parameters"]) == {"cell", "nucleus", "speck"}
    assert result["chosen_on"]["thresholds"] == metrics["by_threshold"]["tuned"]["thresholds"]
    assert result["chosen_on"]["platt"] == ece["platt_parameters"]
    assert result["scored_on"] == {k: result["chosen_on"][k] for k in ("split", "num_images", "stems_sha256")}
    assert set(result["per_image"]["tuned"]) == set(cfg.data.val_stems)
    assert metrics["by_threshold"]["prior_corrected"]["thresholds"]["speck"] == pytest.approx(20 / 21, abs=1e-6)

    # W&B: an offline run of its own under eval/val, with the overlays logged
    rows = history_rows(run_dir / "eval" / "val")
    assert any(key.startswith("eval/val/examples/") for row in rows for key in row)
    assert any(key.startswith("eval/val/table/") for row in rows for key in row)
    assert any(key.startswith("eval/val/reliability") for row in rows for key in row)  # the diagram too
    assert list((run_dir / "eval" / "val").glob("wandb/offline-run-*/files/media/images/**/*.mask.png"))


def test_missing_run_or_test_split_exit_2(run_dir, tmp_path, capsys):
    assert evaluate("--run", str(tmp_path / "nope"), "--no-progress") == 2
    assert "run directory not found" in capsys.readouterr().err
    assert evaluate("--run", str(run_dir), "--split", "test", "--wandb", "disabled", "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert "no labelled test split" in err and len(err.splitlines()) == 1
