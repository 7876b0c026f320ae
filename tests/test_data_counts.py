"""seg/data/counts.py: per-mask counts (equal to decoding + MaskCounts.add), count_masks, read_mask_stats."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

from seg.config import ConfigError
from seg.config.specs import MaskSpec
from seg.data.counts import NEGATIVES, MaskCounts, count_masks, measure_mask, read_mask_stats
from seg.data.folders import Sample
from seg.data.formats import load_mask
from seg.errors import DataError


def _masks(tmp_path: Path) -> dict[str, tuple[MaskSpec, list[tuple[Path, ...]]]]:
    """Small masks of every format, with values that exercise each rule."""
    rng = np.random.default_rng(1)
    cases = {}
    binary = [write_png(tmp_path / "bin" / f"{i}.png", rng.choice([0, 255], (6, 7)).astype(np.uint8)) for i in range(3)]
    cases["binary255"] = (MaskSpec("binary", ("fg",), (255,)), [(p,) for p in binary])
    cases["binary0"] = (MaskSpec("binary", ("membrane",), (0,)), [(p,) for p in binary])
    index = [
        write_png(tmp_path / "idx" / f"{i}.png", rng.choice([0, 1, 2, 9], (5, 8)).astype(np.uint8)) for i in range(3)
    ]
    cases["index"] = (MaskSpec("index", ("a", "b", "c"), None, 9), [(p,) for p in index])
    index3 = [
        write_png(tmp_path / "idx3" / f"{i}.png", rng.choice([0, 1, 2], (5, 8)).astype(np.uint8)) for i in range(2)
    ]
    cases["index_ignore_is_a_class"] = (MaskSpec("index", ("a", "b", "c"), None, 1), [(p,) for p in index3])
    channels = [
        [
            write_png(tmp_path / "ml" / name / f"{i}.png", rng.choice([0, 255], (4, 6)).astype(np.uint8))
            for name in ("a", "b", "c")
        ]
        for i in range(3)
    ]
    cases["multilabel_folders"] = (MaskSpec("multilabel", ("a", "b", "c")), [tuple(c) for c in channels])
    rgba = [
        write_png(tmp_path / "rgb" / f"{i}.png", rng.choice([0, 255], (4, 6, 3)).astype(np.uint8)) for i in range(3)
    ]
    cases["multilabel_rgb"] = (MaskSpec("multilabel", ("r", "g")), [(p,) for p in rgba])
    return cases


def test_measure_mask_counts_equal_decoding(tmp_path):
    """Invariance: counting from raw values == decoding with seg.data.formats + MaskCounts.add."""
    for name, (spec, masks) in _masks(tmp_path).items():
        fast, reference = MaskCounts(spec.num_classes), MaskCounts(spec.num_classes)
        for paths in masks:
            measure = measure_mask(paths, spec)
            assert measure.counted and not measure.problems, name
            fast.add_counts(measure.positive, measure.valid, measure.total, measure.all_zero)
            reference.add(*load_mask(paths, spec))
        for key in ("valid_pixels", "total_pixels", "all_zero_pixels", "images"):
            assert getattr(fast, key) == getattr(reference, key), (name, key)
        np.testing.assert_array_equal(fast.positive_pixels, reference.positive_pixels, err_msg=name)
        np.testing.assert_array_equal(fast.images_with_positives, reference.images_with_positives, err_msg=name)


def test_measure_mask_by_hand(tmp_path):
    # 2x3 index mask, 3 classes, ignore 9: class 0 twice, 1 once, 2 once, 9 twice -> valid 4, all-zero 0.
    path = write_png(tmp_path / "m.png", np.array([[0, 1, 2], [9, 9, 0]], np.uint8))
    m = measure_mask((path,), MaskSpec("index", ("a", "b", "c"), None, 9))
    assert m.positive.tolist() == [2, 1, 1] and (m.valid, m.total, m.all_zero) == (4, 6, 0)
    assert m.values == {0: 2, 1: 1, 2: 1, 9: 2} and m.shape == (2, 3) and m.dtype == "uint8"


def test_measure_mask_reports_instead_of_raising(tmp_path):
    bad = write_png(tmp_path / "bad.png", np.array([[0, 128], [255, 255]], np.uint8))
    m = measure_mask((bad,), MaskSpec("binary", ("fg",), (255,)))
    assert m.counted and m.positive.tolist() == [2]  # counted as the decoder would read it, and reported
    assert [p.kind for p in m.problems] == ["unexpected_values"]
    assert "128" in m.problems[0].detail and "interpolation" in m.problems[0].detail
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    m = measure_mask((junk,), MaskSpec("binary", ("fg",), (255,)))
    assert not m.counted and [p.kind for p in m.problems] == ["unreadable"] and m.problems[0].file == str(junk)


@pytest.mark.parametrize("workers", [1, 2])
def test_count_masks_matches_reference_and_workers(tmp_path, workers):
    spec, masks = _masks(tmp_path)["multilabel_folders"]
    samples = [Sample(str(i), Path("unused.png"), paths) for i, paths in enumerate(masks)]
    counts = count_masks(samples, spec, progress=False, workers=workers)
    reference = MaskCounts(spec.num_classes)
    for paths in masks:
        reference.add(*load_mask(paths, spec))
    np.testing.assert_array_equal(counts.positive_pixels, reference.positive_pixels)
    assert (counts.valid_pixels, counts.all_zero_pixels, counts.images) == (
        reference.valid_pixels,
        reference.all_zero_pixels,
        3,
    )


def test_count_masks_refuses_what_training_refuses(tmp_path):
    good = write_png(tmp_path / "a.png", np.zeros((3, 3), np.uint8))
    bad = write_png(tmp_path / "b.png", np.full((3, 3), 128, np.uint8))
    samples = [Sample("a", good, (good,)), Sample("b", bad, (bad,))]
    with pytest.raises(DataError, match="b.png.*128"):
        count_masks(samples, MaskSpec("binary", ("fg",), (255,)), progress=False)


def _stats_json(path: Path, names=("a", "b"), split="train") -> Path:
    channels = [
        {
            "name": n,
            "positive_pixels": 3 + i,
            "images_with_positives": 2 - i,
            "negative_pixels": {"pixels": 9 - i, "all_zero": 7},
        }
        for i, n in enumerate(names)
    ]
    path.write_text(
        json.dumps(
            {
                "channels": channels,
                "pixels": {"total": 14, "valid": 12, "all_zero": 7},
                "images": 2,
                "split": split,
                "format": {"mask_format": "multilabel"},
            }
        )
    )
    return path


def test_read_mask_stats(tmp_path):
    path = _stats_json(tmp_path / "mask_stats.json")
    stats = read_mask_stats(path, classes=["a", "b"])
    counts = stats.counts
    assert stats.classes == ["a", "b"] and counts.num_channels == 2
    assert counts.positive_pixels.dtype == np.int64 and counts.positive_pixels.tolist() == [3, 4]
    assert stats.negative["pixels"].tolist() == [9, 8] and stats.negative["all_zero"].tolist() == [7, 7]
    assert stats.negative["all_zero"].dtype == np.int64 and set(stats.negative) == set(NEGATIVES)
    assert stats.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (counts.valid_pixels, counts.all_zero_pixels, counts.images, stats.split) == (12, 7, 2, "train")
    assert counts.total_pixels == 14 and counts.images_with_positives.tolist() == [2, 1]
    assert stats.mask_format == "multilabel"


def test_read_mask_stats_errors_name_the_file(tmp_path):
    path = _stats_json(tmp_path / "mask_stats.json")
    with pytest.raises(ConfigError, match=r"mask_stats.json.*\['a', 'b'\].*\['a', 'c'\]"):
        read_mask_stats(path, classes=["a", "c"])
    with pytest.raises(ConfigError, match="missing.json: cannot read"):
        read_mask_stats(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a mask_stats.json"):
        read_mask_stats(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="val.json: counts the val split.*--split train"):
        read_mask_stats(_stats_json(tmp_path / "val.json", split="val"))
    (tmp_path / "partial.json").write_text(json.dumps({"channels": [{"name": "a"}]}))
    with pytest.raises(ConfigError, match="partial.json"):
        read_mask_stats(tmp_path / "partial.json")
