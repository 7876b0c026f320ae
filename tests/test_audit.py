"""seg/audit/ and scripts/audit_masks.py: counts pinned by hand, every problem kind, workers, real data, CLI."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, binary_dataset, shared_data, write_config, write_png

from seg import audit
from seg.config import load_config
from seg.data.counts import read_mask_stats
from seg.data.folders import split_samples
from seg.data.formats import MaskSpec

BINARY = MaskSpec("binary", ("fg",), (255,))


def audit_stats(plan: audit.AuditPlan, workers: int = 1) -> dict:
    """mask_stats.json's content without writing anything."""
    return audit.build_stats(audit.tally_masks(plan.items, plan.settings, workers, progress=False), plan)


def masks_folder(root: Path, masks: dict[str, np.ndarray], images: bool = True) -> Path:
    """root/masks/<stem>.png (and root/images/<stem>.png of the same size) from arrays."""
    for stem, mask in masks.items():
        write_png(root / "masks" / f"{stem}.png", mask)
        if images:
            write_png(root / "images" / f"{stem}.png", np.zeros(mask.shape[:2] + (3,), np.uint8))
    return root / "masks"


def channel(stats: dict, name: str) -> dict:
    return next(c for c in stats["channels"] if c["name"] == name)


# ------------------------------------------------------------------ counts pinned by hand


def test_binary_counts_by_hand(tmp_path):
    a = np.zeros((4, 4), np.uint8)
    a[0, :3] = 255
    masks = masks_folder(tmp_path, {"a": a, "b": np.zeros((4, 4), np.uint8)})
    stats = audit_stats(audit.plan_from_masks(masks, BINARY))
    # 3 positives of 32 pixels; negatives 29 under both definitions (one channel): pos_weight 29/3.
    c = channel(stats, "fg")
    assert (c["positive_pixels"], c["total_pixels"], c["positive_fraction"]) == (3, 32, 0.09375)
    assert (c["images_with_positives"], c["empty_images"]) == (1, 1)
    assert c["negative_pixels"] == {"pixels": 29, "all_zero": 29}
    assert c["pos_weight"]["pixels"] == pytest.approx(29 / 3, rel=1e-6) == c["pos_weight"]["all_zero"]
    assert stats["global_pos_weight"]["pixels"] == pytest.approx(29 / 3, rel=1e-6)
    assert stats["pixels"] == {"total": 32, "valid": 32, "ignored": 0, "all_zero": 29, "all_zero_fraction": 0.90625}
    assert stats["image_sizes"] == [{"width": 4, "height": 4, "masks": 2}]
    assert stats["mask_dtypes"] == {"uint8": 2}
    assert stats["mask_values"] == [{"value": 0, "pixels": 29, "files": 2}, {"value": 255, "pixels": 3, "files": 1}]
    assert channel(stats, "fg")["image_fraction_histogram"]["empty"] == 1
    assert stats["problems"] == [] and stats["clamp"] == [0.001, 1000.0]
    # ISBI convention: the 0 pixels are the positives (29 of 32): pos_weight 3/29.
    membrane = audit_stats(audit.plan_from_masks(masks, MaskSpec("binary", ("membrane",), (0,))))
    assert channel(membrane, "membrane")["positive_pixels"] == 29
    assert channel(membrane, "membrane")["pos_weight"]["pixels"] == pytest.approx(3 / 29, rel=1e-5)


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
    hist_b = channel(stats, "b")["image_fraction_histogram"]
    assert hist_b["empty"] == 0 and sum(hist_b["counts"]) == 2 and hist_b["counts"][-1] == 1  # 1.0: last bin
    hist_a = channel(stats, "a")["image_fraction_histogram"]
    k = int(np.flatnonzero(hist_a["counts"])[0])
    assert hist_a["empty"] == 1 and edges[k] <= 0.5 < edges[k + 1]


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


def test_instance_masks_objects_by_hand(tmp_path):
    # a: objects of 4, 4 and 1 pixels, apart; b: two objects of 2 pixels that touch.
    a = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2], [0, 0, 0, 0, 0], [3, 0, 0, 0, 0]], np.uint16)
    b = np.zeros((4, 5), np.uint16)
    b[0, :4] = [1, 1, 2, 2]
    for stem, labels in {"a": a, "b": b}.items():
        write_png(tmp_path / "instances" / f"{stem}.png", labels)
    masks = masks_folder(tmp_path, {"a": (a > 0).astype(np.uint8) * 255, "b": (b > 0).astype(np.uint8) * 255})
    stats = audit_stats(audit.plan_from_masks(masks, MaskSpec("instance", ("nuclei",), (255,))))
    assert channel(stats, "nuclei")["positive_pixels"] == 13 and stats["pixels"]["total"] == 40
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


def problem_folder(root: Path) -> Path:
    """One file for every problem kind the audit must find."""
    ok = np.zeros((4, 4), np.uint8)
    ok[1:3, 1:3] = 255
    masks = masks_folder(
        root, {"good": ok, "interp": np.where(ok > 0, 255, 0).astype(np.uint8), "badimage": ok, "big": ok}
    )
    interp = ok.copy()
    interp[0, 0] = 128  # a 0/255 mask resized with interpolation
    write_png(masks / "interp.png", interp)
    (root / "masks" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    write_png(root / "images" / "corrupt.png", np.zeros((4, 4, 3), np.uint8))
    (root / "images" / "badimage.png").write_bytes(b"garbage")
    write_png(root / "images" / "big.png", np.zeros((8, 6, 3), np.uint8))  # mask is 4x4
    write_png(root / "images" / "orphan_image.png", np.zeros((4, 4, 3), np.uint8))
    write_png(masks / "orphan_mask.png", ok)
    write_png(masks / "rgb.png", np.stack([ok] * 3, axis=-1))
    write_png(root / "images" / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    write_png(masks / "dup.png", ok)
    write_png(masks / "dup.tif", ok)
    write_png(root / "images" / "dup.png", np.zeros((4, 4, 3), np.uint8))
    return masks


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


# ------------------------------------------------------------------ workers, splits, output


def test_one_and_two_workers_give_identical_results(tmp_path):
    masks = problem_folder(tmp_path)
    plan = audit.plan_from_masks(masks, BINARY, objects=True)
    assert audit_stats(plan, workers=1) == audit_stats(plan, workers=2)


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
    assert audit.seeded_val_stems([s.stem for s in train + val], 0.3, 5) == [s.stem for s in val]


def test_run_audit_writes_the_folder_atomically(tmp_path, monkeypatch):
    masks = problem_folder(tmp_path / "data")
    out = tmp_path / "out"
    plan = audit.plan_from_masks(masks, BINARY, out=str(out), objects=True)
    stats = audit.run_audit(plan, workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(["mask_stats.json", "report.md"] + stats["plots"])
    assert stats["plots"] == ["positive_fraction.png", "image_positive_fraction.png", "object_sizes.png"]
    assert json.loads((out / "mask_stats.json").read_text()) == stats
    report = (out / "report.md").read_text()
    assert "| fg | 25% |" in report and "![positive_fraction.png](positive_fraction.png)" in report
    assert "masks/interp.png" in report and "unexpected_values" in report
    counts, sha256 = audit.read_stats_file(out / "mask_stats.json", classes=["fg"])  # what training reads
    assert counts.positive.tolist() == [channel(stats, "fg")["positive_pixels"]] and counts.positive.dtype == np.int64
    assert (counts.valid, counts.all_zero) == (stats["pixels"]["valid"], stats["pixels"]["all_zero"])
    assert sha256 == hashlib.sha256((out / "mask_stats.json").read_bytes()).hexdigest()
    full = read_mask_stats(out / "mask_stats.json")
    assert full["negative"]["pixels"].tolist() == [channel(stats, "fg")["negative_pixels"]["pixels"]]

    def broken(*args):
        raise RuntimeError("disk full")

    before = (out / "mask_stats.json").read_bytes()
    monkeypatch.setattr(audit, "write_plots", broken)
    with pytest.raises(RuntimeError):
        audit.run_audit(plan, workers=1, progress=False)
    assert (out / "mask_stats.json").read_bytes() == before  # the previous audit is intact
    with pytest.raises(RuntimeError):
        audit.run_audit(audit.plan_from_masks(masks, BINARY, out=str(tmp_path / "new")), workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # nothing half-written, no temp folder


# ------------------------------------------------------------------ real data


def test_isbi_membrane_fraction_matches_numpy():
    masks = shared_data("isbi2012_membrane") / "train" / "masks"
    stats = audit_stats(audit.plan_from_masks(masks, MaskSpec("binary", ("membrane",), (0,))), workers=2)
    positive = total = 0
    for path in sorted(masks.glob("*.png")):  # independent: plain NumPy on every file
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        positive += int((mask == 0).sum())
        total += mask.size
    c = channel(stats, "membrane")
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


# ------------------------------------------------------------------ the script


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "audit_masks.py"), *args, "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_script_exit_0_with_problems_reported(tmp_path):
    masks = problem_folder(tmp_path / "data")
    result = run_script(
        "--masks",
        str(masks),
        "--format",
        "binary",
        "--positive-values",
        "255",
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "mask_stats.json").read_text())
    assert len(stats["problems"]) == 8 and stats["format"]["positive_values"] == [255]
    assert "problem unexpected_values: 1" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--masks", "{tmp}/empty/masks", "--format", "binary"], "no masks found"),
        (["--masks", "{tmp}/nowhere", "--format", "binary"], "masks folder not found"),
        (["--masks", "{tmp}/empty/masks"], "--masks needs --format"),
        (["--masks", "{tmp}/empty/masks", "--format", "index"], "--classes is required"),
        (["--config", "{tmp}/missing.yaml"], "missing.yaml: config file not found"),
        (["--format", "binary"], "one of the arguments --config --masks is required"),
    ],
)
def test_script_exit_2_one_line(tmp_path, args, message):
    (tmp_path / "empty" / "masks").mkdir(parents=True)
    result = run_script(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (REPO / "runs" / "audit-empty").exists()
