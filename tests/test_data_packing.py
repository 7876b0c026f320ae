"""seg/data/packing.py and scripts/gpu_bundle.py: a dataset packed into parts of bounded size (colour PNGs as
lossless WebP) and unpacked elsewhere, part by part, with every pixel checked."""

import json
import os
import subprocess

import cv2
import numpy as np
import pytest
from conftest import REPO, write_config, write_png

from seg.apps import gpu_bundle
from seg.cli import run_main
from seg.config import ConfigError
from seg.data import packing
from seg.errors import DataError


def photo(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth colour image with noise (WebP lossless beats PNG on it, as on photographs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 3, y * 4, (x + y) * 2], axis=-1) % 256
    return np.clip(base + rng.integers(0, 4, base.shape), 0, 255).astype(np.uint8)


def dataset(root):
    for i in range(6):
        write_png(root / "train" / "images" / f"f{i}.png", photo(i))
        write_png(root / "train" / "masks" / f"f{i}.png", (photo(i)[..., 0] > 128).astype(np.uint8) * 255)
    (root / "SOURCE.txt").write_text("where it came from\n")
    return root


def same_files(a, b):
    """Every file under a is under b, with equal pixels (images) or equal bytes (others)."""
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for name in names:
        if name.endswith(".png"):
            one, two = (cv2.imread(str(root / name), cv2.IMREAD_UNCHANGED) for root in (a, b))
            assert one.dtype == two.dtype and np.array_equal(one, two), name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_parts_of_bounded_size_unpack_to_the_same_pixels_over_two_commands(tmp_path, capsys):
    source = dataset(tmp_path / "src" / "toy")
    part_mib = 8_000 / 2**20  # ~8 kB: several parts
    parts = packing.pack(source, tmp_path / "packed", "toy", part_mib)
    assert len(parts) >= 3 and [p.name for p in parts] == [f"toy.{k}" for k in range(1, len(parts) + 1)]
    stored = [json.loads((p / packing.MANIFEST).read_text()) for p in parts]
    assert all(m["parts"] == len(parts) for m in stored)
    entries = [e for m in stored for e in m["files"]]
    images = [e for e in entries if "/images/" in e["original"]]
    masks = [e for e in entries if "/masks/" in e["original"]]
    assert images and all(e["stored"].endswith(".webp") for e in images)  # colour: lossless WebP, smaller
    assert all(e["stored"] == e["original"] for e in masks)  # one channel: as it is
    for part in parts:  # none larger than its bound unless a single file is
        files = [e for e in json.loads((part / packing.MANIFEST).read_text())["files"]]
        assert sum(e["size"] for e in files) <= part_mib * 2**20 or len(files) == 1
    webp = sum(e["size"] for e in images)
    png = sum((source / e["original"]).stat().st_size for e in images)
    assert webp < png

    root = tmp_path / "machine"
    assert packing.main(["unpack", str(parts[0]), "--into", str(root)]) == 2  # the rest has not come yet
    assert f"toy: part(s) {', '.join(str(k) for k in range(2, len(parts) + 1))} not unpacked yet" in (
        capsys.readouterr().out
    )
    assert packing.main(["unpack", *map(str, parts), "--into", str(root)]) == 0  # part 1 is kept, not redone
    same_files(source, root / "toy")


def test_a_changed_part_is_refused(tmp_path, capsys):
    parts = packing.pack(dataset(tmp_path / "src" / "toy"), tmp_path / "packed", "toy", 100.0)
    manifest = json.loads((parts[0] / packing.MANIFEST).read_text())
    image = next(e for e in manifest["files"] if e["stored"].endswith(".webp"))
    other = cv2.imencode(".webp", photo(99), packing.WEBP_LOSSLESS)[1]
    (parts[0] / image["stored"]).write_bytes(other.tobytes())
    assert packing.main(["unpack", str(parts[0]), "--into", str(tmp_path / "m")]) == 2
    assert "decoded pixels differ" in capsys.readouterr().err
    (parts[0] / "SOURCE.txt").write_text("changed\n")
    with pytest.raises(DataError, match="content differs"):
        packing.unpack_part(parts[0], tmp_path / "m2")
    with pytest.raises(DataError, match="no PACK.json"):
        packing.unpack_part(tmp_path, tmp_path / "m3")


def test_bundle_versions_come_from_the_lock(tmp_path):
    pins = gpu_bundle.locked_versions()
    assert pins["segmentation-models-pytorch"] and pins["albumentations"].startswith("2.0.")
    requirements = gpu_bundle.pinned(gpu_bundle.RUN_PACKAGES + gpu_bundle.TRACKING_PACKAGES, pins)
    assert all("==" in r for r in requirements)
    with pytest.raises(ConfigError, match="no pin for no-such-package"):
        gpu_bundle.pinned(("no-such-package",), pins)


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="the bundle is made in a git checkout")
def test_bundle_packs_the_data_and_prints_each_command_with_its_load(tmp_path, monkeypatch, capsys):
    shared = tmp_path / "shared"
    dataset(shared / "toy")
    monkeypatch.setenv("SEG_SHARED_DATA", str(shared))
    out = tmp_path / "bundle"
    assert run_main(gpu_bundle.main, ["--out", str(out), "--no-wheels", "--part-mib", "0.008"]) == 0
    printed = capsys.readouterr().out
    parts = sorted((out / "data").iterdir(), key=lambda p: int(p.name.split(".")[1]))
    assert len(parts) >= 2 and "toy: " in printed and f"in {len(parts)} part(s)" in printed
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert f"command: SEG_SOURCE_COMMIT={head} SEG_SOURCE_DIRTY=" in printed
    assert "bash scripts/gpu_visit.sh check 480" in printed

    # an experiment on the bundled data: its parts but the last go ahead (stage), the grid slice carries the last
    write_config(tmp_path / "toy.yaml", TOY_CONFIG)
    experiment = tmp_path / "toy_grid.yaml"
    experiment.write_text(TOY_EXPERIMENT.format(base=tmp_path / "toy.yaml"))
    assert gpu_bundle.dataset_of(experiment) == "toy"
    plan = gpu_bundle.visits(out, 1.0, "ENV=1", [experiment])
    assert [v.command.split(" ", 1)[1] for v in plan][1:] == [
        *["bash scripts/gpu_visit.sh stage"] * (len(parts) - 1),
        f"bash scripts/gpu_visit.sh grid {os.path.relpath(experiment, REPO)} 4 4 540",
    ]
    assert [v.carry[-1].split("/")[-1] for v in plan[1:]] == [p.name for p in parts]
    assert all(v.carry[0].endswith("whl") and v.mib >= 1.0 for v in plan)

    assert run_main(gpu_bundle.main, ["--out", str(out), "--no-wheels", "--datasets", "nothing"]) == 2
    assert run_main(gpu_bundle.main, ["--out", str(out), "--no-wheels", "--part-mib", "0"]) == 2


TOY_CONFIG = """
data: {root: "${SEG_SHARED_DATA}/toy", mask_format: binary, classes: [x], positive_values: [255], synthetic: false}
"""
TOY_EXPERIMENT = """
title: toy
base: {base}
strategies:
  none: {{loss.weighting: none}}
seeds: [0]
profiles:
  full: {{train.epochs: 1}}
"""
