"""Tests for seg/data/synthetic.py: generate (deterministic per seed, layout, values), ensure_synthetic's safe roots."""

import numpy as np
import pytest
from conftest import REPO, binary_dataset

from seg.config import BASE_CONFIG, expand_path, read_yaml
from seg.data import synthetic
from seg.data.reading import read_image, read_raw
from seg.errors import DataError

# ------------------------------------------------------------------ generate


def file_bytes(root):
    """Every file under ``root`` by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_is_deterministic_per_seed(tmp_path):
    a = file_bytes(synthetic.generate(tmp_path / "a", count=3, size=40, seed=5))
    b = file_bytes(synthetic.generate(tmp_path / "b", count=3, size=40, seed=5))
    assert a == b  # byte for byte
    other = file_bytes(synthetic.generate(tmp_path / "c", count=3, size=40, seed=6))
    assert other.keys() == a.keys()
    assert all(other[name] != a[name] for name in a if name.startswith("images/"))
    assert a[".complete"] == b"count=3 size=40 seed=5\n"


def test_generate_writes_the_layout_and_replaces_what_was_there(tmp_path):
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "images" / "old.png").write_bytes(b"old")
    assert synthetic.generate(root, count=2, size=20) == root
    stems = ["synth_000.png", "synth_001.png"]
    assert sorted(p.name for p in (root / "images").iterdir()) == stems  # the old file is gone
    assert sorted(p.name for p in (root / "instances").iterdir()) == stems
    assert sorted(p.name for p in (root / "masks").iterdir()) == ["cell", "nucleus", "speck"] == list(synthetic.CLASSES)
    for name in synthetic.CLASSES:
        assert sorted(p.name for p in (root / "masks" / name).iterdir()) == stems
    assert (root / synthetic.MARKER).read_text() == "count=2 size=20 seed=0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no .tmp sibling left


def test_generated_sizes_values_and_channel_frequencies(synthetic_root):
    """conftest's set: 12 images of 72 px, seed 0."""
    fractions = {name: [] for name in synthetic.CLASSES}
    for path in sorted((synthetic_root / "images").iterdir()):
        assert read_image(path).shape == (72, 72, 3)
        instances = read_raw(synthetic_root / "instances" / path.name)
        assert instances.dtype == np.uint16 and instances.shape == (72, 72)
        assert 1 <= len(np.unique(instances[instances > 0])) <= 11  # 6 to 11 cells, some may be hidden
        masks = {}
        for name in synthetic.CLASSES:
            mask = read_raw(synthetic_root / "masks" / name / path.name)
            assert mask.dtype == np.uint8 and mask.shape == (72, 72)
            assert set(np.unique(mask).tolist()) <= {0, 255}
            masks[name] = mask > 0
            fractions[name].append(masks[name].mean())
        np.testing.assert_array_equal(masks["cell"], instances > 0)  # cell: the union of the instances
        assert not (masks["nucleus"] & ~masks["cell"]).any()  # a nucleus lies inside its cell
    mean = {name: float(np.mean(values)) for name, values in fractions.items()}
    assert 0.2 < mean["cell"] < 0.5 and 0.01 < mean["nucleus"] < 0.1 and mean["speck"] < 0.01
    assert min(fractions["speck"]) == 0 < max(fractions["speck"])  # specks in some images only


def test_default_image_side_is_not_a_multiple_of_32():
    import inspect

    assert inspect.signature(synthetic.generate).parameters["size"].default % 32 != 0  # validation pads


# ------------------------------------------------------------------ is_default_root, ensure_synthetic


def test_default_root_is_base_yaml_data_root_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert expand_path(read_yaml(BASE_CONFIG)["data"]["root"]) == tmp_path / synthetic.DEFAULT_ROOT
    assert synthetic.is_default_root(synthetic.DEFAULT_ROOT)
    assert synthetic.is_default_root(tmp_path / "data" / "synthetic")
    assert not synthetic.is_default_root(REPO / "data" / "synthetic")  # another folder's data/synthetic


def test_is_default_root_compares_resolved_paths(tmp_path):
    assert synthetic.is_default_root(synthetic.DEFAULT_ROOT / ".." / "synthetic")
    assert synthetic.is_default_root(str(synthetic.DEFAULT_ROOT))
    assert not synthetic.is_default_root(tmp_path / "data" / "synthetic")
    assert not synthetic.is_default_root(synthetic.DEFAULT_ROOT.parent)


def test_missing_non_default_path_is_refused_and_nothing_is_written(tmp_path, small_generate):
    typo = tmp_path / "synthtic"
    with pytest.raises(DataError) as err:
        synthetic.ensure_synthetic(typo)
    assert str(err.value) == (
        f"data.root {typo}: not found; data.synthetic generates only into data/synthetic "
        "or an existing empty folder: create it (mkdir) or fix the path"
    )
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its .tmp sibling


def test_existing_empty_folder_is_generated_into(tmp_path, small_generate):
    root = tmp_path / "mine"
    root.mkdir()
    assert synthetic.ensure_synthetic(root) == root
    assert (root / synthetic.MARKER).is_file() and len(list((root / "images").iterdir())) == 4


def test_default_folder_is_generated_when_missing(tmp_path, monkeypatch, small_generate):
    monkeypatch.chdir(tmp_path)  # the default folder is data/synthetic of the working directory
    default = tmp_path / "data" / "synthetic"
    synthetic.ensure_synthetic(default)
    assert (default / synthetic.MARKER).is_file()


def test_complete_set_is_used_as_it_is(tmp_path, small_generate):
    root = synthetic.generate(tmp_path / "set", count=3, size=20)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    synthetic.ensure_synthetic(root)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_folder_with_files_but_no_marker_is_refused_and_left_alone(tmp_path, small_generate):
    root = binary_dataset(tmp_path / "mydata", count=2, size=12)
    files = sorted(root.rglob("*"))
    with pytest.raises(
        DataError,
        match=rf"^data\.root {root}: holds files but no complete synthetic set "
        r"\(no \.complete file\); .*data\.synthetic: false",
    ):
        synthetic.ensure_synthetic(root)
    assert sorted(root.rglob("*")) == files
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"file: not a folder"):
        synthetic.ensure_synthetic(tmp_path / "file")
