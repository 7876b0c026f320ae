"""seg/audit/tally.py: counts pinned by hand, objects, every problem kind, workers, real data."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import audit_stats, masks_folder, problem_folder, shared_data, stats_channel, write_config, write_png

from seg import audit
from seg.config import load_config
from seg.config.specs import MaskSpec

BINARY = MaskSpec("binary", ("fg",), (255,))


# ------------------------------------------------------------------ counts pinned by hand


def test_binary_counts_by_hand(tmp_path):
    a = np.zeros((4, 4), np.uint8)
    a[0, :3] = 255
    masks = masks_folder(tmp_path, {"a": a, "b": np.zeros((4, 4), np.uint8)})
    stats = audit_stats(audit.plan_from_masks(masks, BINARY))
    # 3 positives of 32 pixels; negatives 29 under both definitions (one channel): pos_weight 29/3.
    c = stats_channel(stats, "fg")
    assert (c["positive_pixels"], c["total_pixels"], c["positive_fraction"]) == (3, 32, 0.09375)
    assert (c["images_with_positives"], c["empty_images"]) == (1, 1)
    assert c["negative_pixels"] == {"pixels": 29, "all_zero": 29}
    assert c["pos_weight"]["pixels"] == pytest.approx(29 / 3, rel=1e-6) == c["pos_weight"]["all_zero"]
    assert stats["global_pos_weight"]["pixels"] == pytest.approx(29 / 3, rel=1e-6)
    assert stats["pixels"] == {"total": 32, "valid": 32, "ignored": 0, "all_zero": 29, "all_zero_fraction": 0.90625}
    assert stats["image_sizes"] == [{"width": 4, "height": 4, "masks": 2}]
    assert stats["mask_dtypes"] == {"uint8": 2}
    assert stats["mask_values"] == [{"value": 0, "pixels": 29, "files": 2}, {"value": 255, "pixels": 3, "files": 1}]
    assert stats_channel(stats, "fg")["image_fraction_histogram"]["empty"] == 1
    assert stats["problems"] == [] and stats["clamp"] == [0.001, 1000.0]
    # ISBI convention: the 0 pixels are the positives (29 of 32): pos_weight 3/29.
    membrane = audit_stats(audit.plan_from_masks(masks, MaskSpec("binary", ("membrane",), (0,))))
    assert stats_channel(membrane, "membrane")["positive_pixels"] == 29
    assert stats_channel(membrane, "membrane")["pos_weight"]["pixels"] == pytest.approx(3 / 29, rel=1e-5)


def test_index_counts_by_hand_with_ignore_and_a_class_never_present(tmp_path):
    masks = masks_folder(
        tmp_path, {"a": np.array([[0, 1, 2], [9, 9, 0]], np.uint8), "b": np.array([[1, 1, 1], [1, 9, 1]], np.uint8)}
    )
    spec = MaskSpec("index", ("a", "b", "c", "d"), None, 9)
    stats = audit_stats(audit.plan_from_masks(masks, spec))
    # positives per class [2, 6, 1, 0]; 12 pixels, 3 ignored -> 9 valid; one-hot: no all-zero pixels.
    # pixels: negatives [7, 3, 8, 9] -> pos_weight [3.5, 0.5, 8.0, clamp max 1000]; global 27 / 9 = 3.
    assert [c["positive_pixels"] for c in stats["channels"]] == [2, 6, 1, 0]
    assert {c["total_pixels"] for c in stats["channels"]} == {9}
    assert [c["positive_fraction"] for c in stats["channels"]] == pytest.approx([2 / 9, 6 / 9, 1 / 9, 0], rel=1e-5)
    assert [c["images_with_positives"] for c in stats["channels"]] == [1, 2, 1, 0]
    assert [c["empty_images"] for c in stats["channels"]] == [1, 0, 1, 2]
    assert [c["pos_weight"]["pixels"] for c in stats["channels"]] == pytest.approx([3.5, 0.5, 8.0, 1000.0])
    assert stats["global_pos_weight"]["pixels"] == pytest.approx(3.0)
    # all_zero: no all-zero pixels -> 0 / pos, clamped to the minimum; class d has no positives -> maximum.
    assert [c["pos_weight"]["all_zero"] for c in stats["channels"]] == pytest.approx([0.001] * 3 + [1000.0])
    assert stats["pixels"] == {"total": 12, "valid": 9, "ignored": 3, "all_zero": 0, "all_zero_fraction": 0.0}
    assert [(p["kind"], "'d'" in p["detail"]) for p in stats["problems"]] == [("never_positive", True)]
    # Image a: class a is 2 of its 4 valid pixels (0.5), b and c 0.25; image b: class b is 5 / 5 = 1.
    edges = stats["image_fraction_bin_edges"]
    hist_b = stats_channel(stats, "b")["image_fraction_histogram"]
    assert hist_b["empty"] == 0 and sum(hist_b["counts"]) == 2 and hist_b["counts"][-1] == 1  # 1.0: last bin
    hist_a = stats_channel(stats, "a")["image_fraction_histogram"]
    k = int(np.flatnonzero(hist_a["counts"])[0])
    assert hist_a["empty"] == 1 and edges[k] <= 0.5 < edges[k + 1]


def test_instance_masks_objects_by_hand(tmp_path):
    # a: objects of 4, 4 and 1 pixels, apart; b: two objects of 2 pixels that touch.
    a = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2], [0, 0, 0, 0, 0], [3, 0, 0, 0, 0]], np.uint16)
    b = np.zeros((4, 5), np.uint16)
    b[0, :4] = [1, 1, 2, 2]
    for stem, labels in {"a": a, "b": b}.items():
        write_png(tmp_path / "instances" / f"{stem}.png", labels)
    masks = masks_folder(tmp_path, {"a": (a > 0).astype(np.uint8) * 255, "b": (b > 0).astype(np.uint8) * 255})
    stats = audit_stats(audit.plan_from_masks(masks, MaskSpec("instance", ("nuclei",), (255,))))
    assert stats_channel(stats, "nuclei")["positive_pixels"] == 13 and stats["pixels"]["total"] == 40
    objects = stats["objects"]
    assert objects["source"] == "instance" and objects["images"] == 2  # on by default for instance masks
    c = objects["channels"][0]
    assert (c["objects"], c["objects_per_image_mean"], c["objects_per_image_max"]) == (5, 2.5, 3)
    assert c["images_with_touching_objects"] == 1 and c["object_size_max"] == 4
    # sizes 1 | 2, 2 | 4, 4 in log2 bins [1,2) [2,4) [4,8); 3 and 2 objects per image both in bin [2,4)
    assert c["object_size_histogram"] == {"bin_lower_edges": [1, 2, 4], "counts": [1, 2, 2]}
    assert c["objects_per_image_histogram"] == {"bin_lower_edges": [0, 1, 2], "counts": [0, 0, 2]}


def test_connected_components_follow_connectivity_and_class(tmp_path):
    mask = np.zeros((3, 3), np.uint8)
    mask[0, 0] = mask[1, 1] = 255  # diagonal neighbours
    masks = masks_folder(tmp_path, {"a": mask})
    four = audit_stats(audit.plan_from_masks(masks, BINARY, objects=True))["objects"]["channels"][0]
    eight = audit_stats(audit.plan_from_masks(masks, BINARY, objects=True, connectivity=8))["objects"]["channels"][0]
    assert (four["objects"], eight["objects"]) == (2, 1)
    assert four["images_with_touching_objects"] is None  # components of one class never touch
    negative = audit_stats(audit.plan_from_masks(masks, BINARY, objects_from="negative"))["objects"]["channels"][0]
    assert negative["name"] == "not fg" and negative["objects"] == 1 and negative["object_size_max"] == 7
    assert audit_stats(audit.plan_from_masks(masks, BINARY))["objects"] is None  # off by default for binary


# ------------------------------------------------------------------ problems


EXPECTED_PROBLEMS = {
    ("masks/corrupt.png", "unreadable"),
    ("images/badimage.png", "unreadable"),
    ("images/orphan_image.png", "image_without_mask"),
    ("masks/orphan_mask.png", "mask_without_image"),
    ("images/big.png", "size_mismatch"),
    ("masks/interp.png", "unexpected_values"),
    ("masks/rgb.png", "rgb_mask"),
    ("masks/dup.tif", "duplicate_stem"),
    ("masks", "never_positive"),
}


def test_every_problem_is_reported_with_its_file(tmp_path):
    masks = problem_folder(tmp_path)
    # positive_values [1]: the 0/255 masks never hold the positive value -> the channel is never positive.
    stats = audit_stats(audit.plan_from_masks(masks, MaskSpec("binary", ("fg",), (1,))))
    found = {(str(Path(p["file"]).relative_to(tmp_path)), p["kind"]) for p in stats["problems"]}
    assert found == EXPECTED_PROBLEMS
    detail = {p["kind"]: p["detail"] for p in stats["problems"]}
    assert "128" in detail["unexpected_values"] and "interpolation" in detail["unexpected_values"]
    assert "image 6x8, mask 4x4" in detail["size_mismatch"] and "'fg'" in detail["never_positive"]
    assert "all equal: counted" in detail["rgb_mask"] and "dup.png" in detail["duplicate_stem"]
    # Counted: good, interp, badimage, big, orphan_mask, dup, rgb (equal channels); not counted: corrupt.
    assert (stats["masks_found"], stats["images"], stats["masks_not_counted"]) == (8, 7, 1)
    assert stats["problem_counts"]["unreadable"] == 2


def test_binary_problem_folder_and_rgb_with_different_channels(tmp_path):
    masks = problem_folder(tmp_path)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)  # channels differ: cannot be read as one mask
    write_png(masks / "rgb.png", rgb)
    stats = audit_stats(audit.plan_from_masks(masks, BINARY))
    found = {(str(Path(p["file"]).relative_to(tmp_path)), p["kind"]) for p in stats["problems"]}
    assert found == EXPECTED_PROBLEMS - {("masks", "never_positive")}
    assert "channels differ: not counted" in next(p["detail"] for p in stats["problems"] if p["kind"] == "rgb_mask")
    assert stats["images"] == 6  # good, interp, badimage, big, orphan_mask, dup


def test_image_size_follows_exif_orientation_as_cv2_reads_it(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 wide x 10 high, shown (and read by cv2) turned: 10 wide x 20 high
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "images" / "a.jpg", exif=exif)
    masks = masks_folder(tmp_path, {"a": np.zeros((20, 10), np.uint8)}, images=False)
    assert cv2.imread(str(tmp_path / "images" / "a.jpg")).shape[:2] == (20, 10)
    kinds = {p["kind"] for p in audit_stats(audit.plan_from_masks(masks, BINARY))["problems"]}
    assert kinds == {"never_positive"}  # no size_mismatch: the mask is 10 wide x 20 high, like the image


# ------------------------------------------------------------------ workers


def test_one_and_two_workers_give_identical_results(tmp_path):
    masks = problem_folder(tmp_path)
    plan = audit.plan_from_masks(masks, BINARY, objects=True)
    assert audit_stats(plan, workers=1) == audit_stats(plan, workers=2)


# ------------------------------------------------------------------ real data


def test_isbi_membrane_fraction_matches_numpy():
    masks = shared_data("isbi2012_membrane") / "train" / "masks"
    stats = audit_stats(audit.plan_from_masks(masks, MaskSpec("binary", ("membrane",), (0,))), workers=2)
    positive = total = 0
    for path in sorted(masks.glob("*.png")):  # independent: plain NumPy on every file
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        positive += int((mask == 0).sum())
        total += mask.size
    c = stats_channel(stats, "membrane")
    assert (c["positive_pixels"], c["total_pixels"], stats["images"]) == (positive, total, 30)
    assert c["positive_fraction"] == pytest.approx(positive / total, rel=1e-6)
    assert c["positive_fraction"] == pytest.approx(0.2196, abs=5e-5)
    assert stats["problems"] == [] and stats["mask_values"][0]["value"] == 0


CAMVID_CLASSES = [
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "signsymbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
]


def test_camvid_val_fractions_match_numpy(tmp_path):
    root = shared_data("camvid")
    config = write_config(
        tmp_path / "camvid.yaml",
        f"data:\n  root: {root}\n  mask_format: index\n"
        f"  classes: [{', '.join(CAMVID_CLASSES)}]\n  ignore_index: 11\n  synthetic: false\n",
    )
    plan = audit.plan_from_config(load_config(config), str(config), split="val")
    assert len(plan.items) == 101 and plan.dataset == "camvid"
    stats = audit_stats(plan, workers=2)
    counts = np.zeros(12, np.int64)
    for path in sorted((root / "val" / "masks").glob("*.png")):
        counts += np.bincount(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ravel(), minlength=12)[:12]
    valid = counts[:11].sum()
    assert [c["positive_pixels"] for c in stats["channels"]] == counts[:11].tolist()
    assert [c["positive_fraction"] for c in stats["channels"]] == pytest.approx(counts[:11] / valid, rel=1e-5)
    assert stats["pixels"]["ignored"] == counts[11] and stats["problems"] == []
