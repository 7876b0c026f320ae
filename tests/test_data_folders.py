"""seg/data/folders.py: pairing images with masks by stem, and the train/val split."""

import numpy as np
import pytest
from conftest import binary_dataset, write_png

from seg.config.specs import MaskSpec
from seg.data.folders import files_by_stem, find_samples, find_splits, seeded_val_stems, split_samples
from seg.data.formats import Faults
from seg.errors import DataError

SPEC = MaskSpec("binary", ("x",), positive_values=(255,))


def test_pairs_by_stem(tmp_path):
    binary_dataset(tmp_path, count=3)
    samples = find_samples(tmp_path, SPEC)
    assert [s.stem for s in samples] == ["img0", "img1", "img2"]
    assert all(s.image.parent.name == "images" and s.masks[0].parent.name == "masks" for s in samples)


def test_image_without_mask_and_mask_without_image(tmp_path):
    binary_dataset(tmp_path, count=2)
    write_png(tmp_path / "images" / "lonely.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"lonely\.png: image has no mask"):
        find_samples(tmp_path, SPEC)
    (tmp_path / "images" / "lonely.png").unlink()
    write_png(tmp_path / "masks" / "orphan.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"orphan\.png: mask has no image"):
        find_samples(tmp_path, SPEC)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        split_samples(tmp_path / "nothing", SPEC, 0.2, 0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images found"):
        find_samples(tmp_path, SPEC)


def test_seeded_split_is_deterministic_and_recorded(tmp_path):
    binary_dataset(tmp_path, count=10)
    train, val, stems = split_samples(tmp_path, SPEC, 0.2, split_seed=0)
    assert len(val) == 2 and len(train) == 8 and stems == sorted(s.stem for s in val)
    assert split_samples(tmp_path, SPEC, 0.2, split_seed=0)[2] == stems
    train2, val2, _ = split_samples(tmp_path, SPEC, 0.2, split_seed=5, val_stems=stems)
    assert [s.stem for s in val2] == stems  # a recorded split is repeated exactly
    with pytest.raises(DataError, match="val_stems names 'ghost'"):
        split_samples(tmp_path, SPEC, 0.2, 0, val_stems=["ghost"])


def test_split_folders_and_unlabelled_test_folder(tmp_path):
    binary_dataset(tmp_path / "train", count=3)
    binary_dataset(tmp_path / "val", count=2, seed=1)
    write_png(tmp_path / "test" / "images" / "t.png", np.zeros((4, 4, 3), np.uint8))  # no masks: not a split
    train, val, stems = split_samples(tmp_path, SPEC, 0.2, 0)
    assert len(train) == 3 and len(val) == 2 and stems == ["img0", "img1"]


def test_seeded_val_stems_is_the_rule_split_samples_applies(tmp_path):
    binary_dataset(tmp_path, count=10)
    _, val, stems = split_samples(tmp_path, SPEC, 0.3, split_seed=5)
    assert seeded_val_stems([f"img{i}" for i in reversed(range(10))], 0.3, 5) == stems == [s.stem for s in val]
    assert len(seeded_val_stems(["a", "b"], 0.01, 0)) == 1 and len(seeded_val_stems(["a", "b"], 0.99, 0)) == 1


def test_duplicate_stem_strict_or_listed(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    write_png(tmp_path / "a.tif", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"a\.tif: duplicate file stem 'a' \(also a\.png\)"):
        files_by_stem(tmp_path)
    faults = Faults(strict=False)
    assert files_by_stem(tmp_path, faults) == {"a": tmp_path / "a.png"}
    assert [(p.kind, p.detail) for p in faults.problems] == [
        ("duplicate_stem", "duplicate file stem 'a' (also a.png); only a.png is read")
    ]


def test_carved_test_split_comes_first_and_is_recorded(tmp_path):
    """ISBI-style: one labelled folder; test carved with the split seed, validation from the rest."""
    binary_dataset(tmp_path, count=30)
    splits = find_splits(tmp_path, SPEC, 0.2, 0, test_fraction=0.2)
    stems = [f"img{i}" for i in range(30)]
    assert splits.test_stems == seeded_val_stems(stems, 0.2, 0) == [s.stem for s in splits.test]
    rest = sorted(set(stems) - set(splits.test_stems))
    assert splits.val_stems == seeded_val_stems(rest, 0.2, 0) == [s.stem for s in splits.val]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (19, 5, 6)
    everything = [s.stem for s in splits.train + splits.val + splits.test]
    assert sorted(everything) == sorted(stems)  # disjoint and complete
    assert splits.test_source == f"carved from {tmp_path.name}/ (data.test_fraction 0.2, split seed 0)"
    again = find_splits(tmp_path, SPEC, 0.2, 9, splits.val_stems, test_fraction=0.2, test_stems=splits.test_stems)
    assert [s.stem for s in again.test] == splits.test_stems and again.val_stems == splits.val_stems  # repeated
    with pytest.raises(DataError, match="test_stems names 'ghost'"):
        find_splits(tmp_path, SPEC, 0.2, 0, test_fraction=0.2, test_stems=["ghost"])


def test_a_labelled_folder_as_test_and_validation_carved_from_train(tmp_path):
    """CamVid-style: val/ becomes the test split; validation is carved from train/."""
    binary_dataset(tmp_path / "train", count=10)
    binary_dataset(tmp_path / "val", count=3, seed=1)
    splits = find_splits(tmp_path, SPEC, 0.2, 0, test_folder="val")
    assert [s.image.parent.parent.name for s in splits.test] == ["val"] * 3
    assert len(splits.val) == 2 and all(s.image.parent.parent.name == "train" for s in splits.val + splits.train)
    assert splits.test_stems is None and splits.test_source == "the labelled folder val/"
    default = find_splits(tmp_path, SPEC, 0.2, 0)  # without test_folder: val/ is validation, no test
    assert len(default.val) == 3 and default.test == [] and default.test_source == ""
    with pytest.raises(DataError, match="data.test_folder needs a labelled split"):
        find_splits(tmp_path, SPEC, 0.2, 0, test_folder="nope")


def test_a_labelled_test_folder_is_the_test_split(tmp_path):
    binary_dataset(tmp_path / "train", count=4)
    binary_dataset(tmp_path / "test", count=2, seed=3)
    splits = find_splits(tmp_path, SPEC, 0.25, 0)
    assert len(splits.test) == 2 and len(splits.val) == 1 and splits.test_source == "the labelled folder test/"
