"""Tests for seg/run_data.py: silent wrong data made loud before a run starts: absent positive values,
synthetic data into a typo, LA and palette PNG masks decoded and counted as the format says.

Each case is a tiny hand-made fixture; each refusal is a DataError whose one line names the
file or path and the value, and says what to do.
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import ALPHA, GREY, REPO, binary_dataset, la_png, palette_png, write_config, write_png

from seg import audit
from seg.apps import train as train_app
from seg.cli import run_main
from seg.config import load_config
from seg.config.specs import MaskSpec
from seg.data import synthetic
from seg.data.counts import MaskCounts, count_masks, measure_mask
from seg.data.folders import Sample
from seg.data.formats import decode_instances, load_mask
from seg.data.reading import png_colour_type, read_raw
from seg.errors import DataError
from seg.run_data import prepare_data


def binary_config(tmp_path: Path, root: Path, positive: str, name: str = "c.yaml") -> Path:
    return write_config(
        tmp_path / name,
        f"data:\n  root: {root}\n  mask_format: binary\n  classes: [fg]\n"
        f"  positive_values: {positive}\n  synthetic: false\n",
    )


# ------------------------------------------------------------------ 1. positive_values that no mask holds


def test_positive_value_in_no_training_mask_is_refused(tmp_path):
    root = binary_dataset(tmp_path / "d", count=4, size=16)  # 0/255 masks
    with pytest.raises(DataError) as err:
        prepare_data(load_config(binary_config(tmp_path, root, "[7]")), progress=False)
    assert str(err.value).startswith(
        f"data.positive_values: 7 occurs in no training mask of {root} (values found: 0, 255); "
    )
    assert "[255]" in str(err.value)  # says what to do
    # Only the absent value is named; one that some mask holds is fine.
    with pytest.raises(DataError, match=r"data\.positive_values: 7 occurs in no training mask .*values found: 0, 255"):
        prepare_data(load_config(binary_config(tmp_path, root, "[255, 7]")), progress=False)
    with pytest.raises(DataError, match=r"data\.positive_values: 1, 7 occur in no training mask"):
        prepare_data(load_config(binary_config(tmp_path, root, "[1, 7, 255]")), progress=False)
    data = prepare_data(load_config(binary_config(tmp_path, root, "[255]")), progress=False)
    assert data.train_counts.values == {0, 255}
    assert prepare_data(load_config(binary_config(tmp_path, root, "[0]")), progress=False).train_counts.images


def test_positive_value_only_in_a_validation_mask_is_still_refused(tmp_path):
    # train/ holds 0/1 masks, val/ holds 0/255: training would learn 255 from no mask at all.
    for split, value in (("train", 1), ("val", 255)):
        for stem in ("a", "b"):
            mask = np.zeros((6, 6), np.uint8)
            mask[:2] = value
            write_png(tmp_path / "d" / split / "masks" / f"{stem}.png", mask)
            write_png(tmp_path / "d" / split / "images" / f"{stem}.png", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"255 occurs in no training mask .*\(values found: 0, 1\)"):
        prepare_data(load_config(binary_config(tmp_path, tmp_path / "d", "[255]")), progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_count_masks_collects_the_raw_values_from_every_worker(tmp_path, workers):
    paths = [write_png(tmp_path / f"{i}.png", np.array([[0, v]], np.uint8)) for i, v in enumerate((1, 255, 0, 1))]
    samples = [Sample(p.stem, p, (p,)) for p in paths]
    counts = count_masks(samples, MaskSpec("binary", ("fg",), (255,)), progress=False, workers=workers)
    assert counts.values == {0, 1, 255} and counts.images == 4
    merged = MaskCounts(1)
    merged.merge(counts)
    assert merged.values == {0, 1, 255}


def test_audit_of_a_config_lists_the_absent_positive_value(tmp_path):
    root = binary_dataset(tmp_path / "d", count=4, size=16)
    config = binary_config(tmp_path, root, "[255, 7]")
    plan = audit.plan_from_config(load_config(config), str(config))
    stats = audit.build_stats(audit.tally_masks(plan.items, plan.settings, 1, progress=False), plan)
    problem = next(p for p in stats["problems"] if p["kind"] == "positive_value_absent")
    assert problem["file"] == str(root)
    assert problem["detail"].startswith(
        f"data.positive_values: 7 occurs in no train mask of {root} (values found: 0, 255)"
    )
    # --masks without a config assumes both 1 and 255: no such problem there.
    kinds = {
        p["kind"]
        for p in audit.build_stats(
            audit.tally_masks(plan.items, plan.settings, 1, progress=False),
            audit.plan_from_masks(root / "masks", MaskSpec("binary", ("fg",), (1, 255))),
        )["problems"]
    }
    assert "positive_value_absent" not in kinds


def test_train_script_exit_2_one_line_for_an_absent_positive_value(tmp_path, capsys):
    root = binary_dataset(tmp_path / "d", count=4, size=16)
    code = run_main(
        train_app.main,
        [
            "--config",
            str(binary_config(tmp_path, root, "[7]")),
            f"run.out_dir={tmp_path / 'runs'}",
            "logging.wandb.mode=disabled",
            "--no-progress",
        ],
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.splitlines() == [err] and err.startswith("error: data.positive_values: 7 occurs in no training mask")
    assert str(root) in err and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 2. synthetic data: only into a safe folder
# (ensure_synthetic's own rules: tests/test_data_synthetic.py)


def test_generated_folder_works_with_synthetic_true_and_false(tmp_path):
    root = synthetic.generate(tmp_path / "gen", count=5, size=24)
    for flag in ("true", "false"):
        cfg = load_config(REPO / "configs" / "synthetic.yaml", [f"data.root={root}", f"data.synthetic={flag}"])
        assert prepare_data(cfg, progress=False).train_counts.images == 4


def test_train_script_exit_2_one_line_for_a_mistyped_synthetic_root(tmp_path, capsys, small_generate):
    typo = tmp_path / "synthtic"
    code = run_main(
        train_app.main,
        [
            "--config",
            str(REPO / "configs" / "synthetic.yaml"),
            f"data.root={typo}",
            f"run.out_dir={tmp_path / 'runs'}",
            "logging.wandb.mode=disabled",
            "--no-progress",
        ],
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err == (
        f"error: data.root {typo}: not found; data.synthetic generates only into data/synthetic or an "
        "existing empty folder: create it (mkdir) or fix the path"
    )
    assert not typo.exists() and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 3. grey+alpha PNG: grey, then alpha
# (read_raw's [H,W,2]: tests/test_data_reading.py)


def test_la_png_as_a_two_class_multilabel_mask_and_stats_agree(tmp_path):
    path = la_png(tmp_path / "m.png")
    spec = MaskSpec("multilabel", ("grey", "alpha"))
    target, valid = load_mask((path,), spec)
    np.testing.assert_array_equal(target[..., 0], GREY > 0)
    np.testing.assert_array_equal(target[..., 1], ALPHA > 0)
    measure = measure_mask((path,), spec)  # the audit / count_masks decoder
    assert measure.counted and not measure.problems
    assert measure.positive.tolist() == [3, 2] and measure.all_zero == 2  # union: 4 of 6 pixels
    reference = MaskCounts(2)
    reference.add(target, valid)
    assert reference.positive_pixels.tolist() == [3, 2] and reference.all_zero_pixels == 2


def test_la_png_binary_mask_is_refused_naming_file_and_hint(tmp_path):
    path = la_png(tmp_path / "m.png")
    with pytest.raises(
        DataError,
        match=r"m\.png: mask has 2 channels but a single-channel mask is expected "
        r"\(a grey\+alpha PNG: save it as grayscale without alpha\)",
    ):
        load_mask((path,), MaskSpec("binary", ("fg",), (255,)))
    with pytest.raises(DataError, match=r"m\.png: multilabel mask has 2 channel\(s\); data\.classes lists 3"):
        load_mask((path,), MaskSpec("multilabel", ("a", "b", "c")))
    problems = measure_mask((path,), MaskSpec("binary", ("fg",), (255,))).problems
    assert [p.kind for p in problems] == ["rgb_mask"] and "grey+alpha" in problems[0].detail


# ------------------------------------------------------------------ 4. palette PNG: indices for index masks


INDICES = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)
COLOURS = [0, 0, 0, 200, 30, 30, 30, 200, 30]  # black, red, green


def test_palette_index_mask_decodes_as_its_indices(tmp_path):
    path = palette_png(tmp_path / "m.png", INDICES, COLOURS)
    assert png_colour_type(path) == 3
    spec = MaskSpec("index", ("bg", "a", "b"))
    target, valid = load_mask((path,), spec)
    np.testing.assert_array_equal(target.argmax(axis=-1), INDICES)
    assert target.sum() == 6 and valid.all()
    measure = measure_mask((path,), spec)
    assert not measure.problems and measure.positive.tolist() == [2, 1, 3] and measure.values == {0: 2, 1: 1, 2: 3}


def test_palette_index_mask_out_of_range_index_names_the_index(tmp_path):
    path = palette_png(tmp_path / "m.png", np.array([[0, 5]], np.uint8), COLOURS + [9] * 9)
    with pytest.raises(DataError, match=r"m\.png: value\(s\) 5 not valid for an index mask with 3 classes"):
        load_mask((path,), MaskSpec("index", ("bg", "a", "b")))


def test_palette_of_greys_decodes_as_the_greys_for_binary_masks(tmp_path):
    path = palette_png(tmp_path / "m.png", np.array([[0, 1], [1, 0]], np.uint8), [0, 0, 0, 255, 255, 255])
    np.testing.assert_array_equal(read_raw(path), [[0, 255], [255, 0]])  # what a viewer shows
    target, _ = load_mask((path,), MaskSpec("binary", ("fg",), (255,)))
    np.testing.assert_array_equal(target[..., 0], [[0, 1], [1, 0]])
    assert measure_mask((path,), MaskSpec("binary", ("fg",), (255,))).values == {0: 2, 255: 2}


def test_palette_with_colours_is_refused_for_binary_and_read_as_rgb_for_multilabel(tmp_path):
    path = palette_png(tmp_path / "m.png", np.array([[0, 1], [1, 0]], np.uint8), [0, 0, 0, 255, 0, 0])
    with pytest.raises(
        DataError,
        match=r"m\.png: mask has 3 channels .*a palette PNG with colours.*"
        r"data\.mask_format: index",
    ):
        load_mask((path,), MaskSpec("binary", ("fg",), (255,)))
    target, _ = load_mask((path,), MaskSpec("multilabel", ("r", "g")))  # R channel = index 1's red
    np.testing.assert_array_equal(target[..., 0], [[0, 1], [1, 0]])
    assert not target[..., 1].any()


def test_palette_instance_labels_decode_as_indices(tmp_path):
    path = palette_png(tmp_path / "i.png", np.array([[0, 3], [7, 3]], np.uint8), [0, 0, 0] + [120, 40, 220] * 7)
    labels = decode_instances(read_raw(path, palette_indices=True), path)
    np.testing.assert_array_equal(labels, [[0, 3], [7, 3]])


# ------------------------------------------------------------------ structure metrics of instance objects


def test_instance_objects_are_read_for_structure_metrics(tmp_path):
    """metrics.objects_from: instance pairs every image with its instances/ labels (train, val and test) and
    reads them by dataset index; without instances/ the run is refused naming the folder."""
    from seg.run_data import data_splits, needs_instance_files, structure_settings

    root = binary_dataset(tmp_path / "data", count=6)
    labels = {}
    for i in range(6):
        label = np.zeros((40, 40), np.uint16)
        label[2:8, 2:8], label[20:30, 20:30] = 7, 300 + i  # 16-bit labels
        labels[f"img{i}"] = label
    config = binary_config(tmp_path, root, "[255]")
    overrides = ["metrics.structure=[object_ap]", "metrics.objects_from=instance", "data.test_fraction=0.34"]
    with pytest.raises(DataError, match=r"instances: folder not found"):
        prepare_data(load_config(config, overrides), progress=False)
    for stem, label in labels.items():
        write_png(root / "instances" / f"{stem}.png", label)
    cfg = load_config(config, overrides)
    assert needs_instance_files(cfg) and not needs_instance_files(load_config(config))
    splits = data_splits(cfg, needs_instance_files(cfg))
    assert len(splits.test) == 2 and all(s.instances is not None for s in splits.train + splits.val + splits.test)
    settings = structure_settings(cfg, splits.test)
    assert settings is not None and settings.metrics == ("object_ap",) and settings.objects_from == "instance"
    assert settings.instances is not None
    np.testing.assert_array_equal(settings.instances(1), labels[splits.test[1].stem])
    assert structure_settings(load_config(config), splits.test) is None  # metrics.structure empty: nothing kept
