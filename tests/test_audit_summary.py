"""seg/audit/summary.py: mask_stats.json's weights under both negative definitions, and reading it back."""

import hashlib

import numpy as np
import pytest
from conftest import audit_stats, problem_folder, stats_channel, write_png

from seg import audit
from seg.config.specs import MaskSpec
from seg.data.counts import read_mask_stats

BINARY = MaskSpec("binary", ("fg",), (255,))


CELL = np.array([[255, 255, 255], [0, 0, 0]], np.uint8)
NUCLEUS = np.array([[0, 255, 255], [0, 0, 255]], np.uint8)
NUCLEUS_B = np.array([[0, 0, 0], [0, 0, 1]], np.uint8)  # 0/1 is a valid multilabel channel too


@pytest.mark.parametrize("layout", ["channel_folders", "one_rgb_png"])
def test_multilabel_overlap_both_negative_definitions(tmp_path, layout):
    spec = MaskSpec("multilabel", ("cell", "nucleus"))
    images = {"a": (CELL, NUCLEUS), "b": (np.zeros_like(CELL), NUCLEUS_B)}
    for stem, (cell, nucleus) in images.items():
        write_png(tmp_path / "images" / f"{stem}.png", np.zeros((2, 3, 3), np.uint8))
        if layout == "channel_folders":
            write_png(tmp_path / "masks" / "cell" / f"{stem}.png", cell)
            write_png(tmp_path / "masks" / "nucleus" / f"{stem}.png", nucleus)
        else:  # R = cell, G = nucleus, B unused
            write_png(tmp_path / "masks" / f"{stem}.png", np.stack([cell, nucleus, np.zeros_like(cell)], axis=-1))
    stats = audit_stats(audit.plan_from_masks(tmp_path / "masks", spec))
    # Image a: cell 3, nucleus 3, overlapping in 2 pixels: union 4 of 6 -> all-zero 2.
    # Image b: cell 0, nucleus 1 -> all-zero 5.  Totals: positives [3, 4], valid 12, all-zero 7.
    # pixels:   negatives [12-3, 12-4] = [9, 8] -> pos_weight [3, 2];      global (9+8)/(3+4) = 17/7
    # all_zero: negatives [7, 7]              -> pos_weight [7/3, 7/4];  global (7+7)/(3+4) = 2
    assert [c["positive_pixels"] for c in stats["channels"]] == [3, 4]
    assert stats["pixels"]["all_zero"] == 7 and stats["pixels"]["valid"] == 12
    assert [c["negative_pixels"] for c in stats["channels"]] == [
        {"pixels": 9, "all_zero": 7},
        {"pixels": 8, "all_zero": 7},
    ]
    assert [c["pos_weight"]["pixels"] for c in stats["channels"]] == pytest.approx([3.0, 2.0])
    assert [c["pos_weight"]["all_zero"] for c in stats["channels"]] == pytest.approx([7 / 3, 7 / 4], rel=1e-5)
    assert stats["global_pos_weight"]["pixels"] == pytest.approx(17 / 7, rel=1e-5)
    assert stats["global_pos_weight"]["all_zero"] == pytest.approx(2.0)
    assert [c["images_with_positives"] for c in stats["channels"]] == [1, 2]
    assert stats["problems"] == []


def test_mask_stats_read_back_give_the_counts_training_reads(tmp_path):
    masks = problem_folder(tmp_path / "data")
    out = tmp_path / "out"
    stats = audit.run_audit(audit.plan_from_masks(masks, BINARY, out=str(out)), workers=1, progress=False)
    read_back = read_mask_stats(out / "mask_stats.json", classes=["fg"])  # what training reads
    counts, sha256 = read_back.counts, read_back.sha256
    fg = stats_channel(stats, "fg")
    assert counts.positive_pixels.tolist() == [fg["positive_pixels"]] and counts.positive_pixels.dtype == np.int64
    assert (counts.valid_pixels, counts.all_zero_pixels) == (stats["pixels"]["valid"], stats["pixels"]["all_zero"])
    assert (counts.total_pixels, counts.images) == (stats["pixels"]["total"], stats["images"])
    assert counts.images_with_positives.tolist() == [fg["images_with_positives"]]
    assert sha256 == hashlib.sha256((out / "mask_stats.json").read_bytes()).hexdigest()
    full = read_mask_stats(out / "mask_stats.json")
    assert full.negative["pixels"].tolist() == [fg["negative_pixels"]["pixels"]]
