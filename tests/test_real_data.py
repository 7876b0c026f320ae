"""Training runs on the real data in ../shared/data (SEG_SHARED_DATA): ISBI [B,1,H,W], CamVid [B,C,H,W]."""

import json

import pytest
from conftest import REPO, shared_data
from test_apps_train import train

TINY = [
    "train.epochs=1",
    "train.max_steps_per_epoch=1",
    "train.batch_size=2",
    "data.image_size=64",
    "data.max_val_images=1",
    "logging.wandb.mode=disabled",
    "--no-progress",
]


@pytest.mark.parametrize("name, dataset, channels", [("isbi2012", "isbi2012_membrane", 1), ("camvid", "camvid", 11)])
def test_real_dataset_trains_one_step(tmp_path, name, dataset, channels):
    shared_data(dataset)
    assert train("--config", str(REPO / "configs" / f"{name}.yaml"), f"run.out_dir={tmp_path}", *TINY) == 0
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert len(summary["val"]["per_channel"]) == channels == len(summary["effective_pos_weight"])


def test_isbi_border_map_from_cells(tmp_path):
    shared_data("isbi2012_membrane")
    assert (
        train(
            "--config",
            str(REPO / "configs" / "isbi2012.yaml"),
            f"run.out_dir={tmp_path}",
            "loss.weighting=border_map",
            "loss.apply_as=weight",
            *TINY,
        )
        == 0
    )
    summary = json.loads((tmp_path / "isbi2012" / "summary.json").read_text())
    # the border term (up to w0 = 10, about 9 between cells two pixels apart) adds to the class weights w_c
    assert summary["weight_map_stats"]["membrane"]["max"] > max(summary["class_weights"]) + 5.0
