"""seg/audit/scan.py: the tolerant scan (missing channels and instances) and the split as training splits."""

from pathlib import Path

import numpy as np
from conftest import binary_dataset, masks_folder, write_config, write_png

from seg import audit
from seg.config import load_config
from seg.config.specs import MaskSpec
from seg.data.folders import seeded_val_stems, split_samples

BINARY = MaskSpec("binary", ("fg",), (255,))


def test_missing_channel_and_missing_instances(tmp_path):
    write_png(tmp_path / "masks" / "a" / "x.png", np.zeros((2, 2), np.uint8))
    write_png(tmp_path / "masks" / "b" / "x.png", np.zeros((2, 2), np.uint8))
    write_png(tmp_path / "masks" / "a" / "y.png", np.zeros((2, 2), np.uint8))
    plan = audit.plan_from_masks(tmp_path / "masks", MaskSpec("multilabel", ("a", "b")))
    assert [i.stem for i in plan.items] == ["x"]
    assert {(Path(p.file).name, p.kind) for p in plan.problems} == {
        ("y.png", "missing_channel"),
        ("images", "missing_images"),
    }
    inst = tmp_path / "inst"
    masks_folder(inst, {"x": np.zeros((2, 2), np.uint8)})
    plan = audit.plan_from_masks(inst / "masks", MaskSpec("instance", ("n",), (255,)))
    assert [(Path(p.file).name, p.kind) for p in plan.problems] == [("instances", "missing_instances")]


def test_split_matches_training(tmp_path):
    root = binary_dataset(tmp_path / "data", count=10, size=16)
    config = write_config(
        tmp_path / "c.yaml",
        f"data:\n  root: {root}\n  mask_format: binary\n"
        "  classes: [fg]\n  positive_values: [255]\n  val_fraction: 0.3\n  split_seed: 5\n",
    )
    cfg = load_config(config)
    train, val, _ = split_samples(root, BINARY, 0.3, 5)
    for split, expected in (("train", train), ("val", val)):
        plan = audit.plan_from_config(cfg, str(config), split)
        assert [i.stem for i in plan.items] == [s.stem for s in expected]
        assert plan.dataset == "data" and plan.out_dir.name == "audit-data"
    assert len(audit.plan_from_config(cfg, str(config), "all").items) == 10
    assert seeded_val_stems([s.stem for s in train + val], 0.3, 5) == [s.stem for s in val]
