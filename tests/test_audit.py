"""Tests for seg/audit/__init__.py: run_audit writes the audit folder, and write_atomically swaps a folder
into place (a failure leaves the previous one and no temp folder)."""

import json
import os

import pytest
from conftest import problem_folder

from seg import audit
from seg.config.specs import MaskSpec
from seg.errors import ConfigError

BINARY = MaskSpec("binary", ("fg",), (255,))


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


def fill_with(**files):
    def fill(folder):
        for name, text in files.items():
            (folder / name).write_text(text)

    return fill


def test_write_atomically_creates_then_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "parent" / "audit"  # the parent is created too
    audit.write_atomically(out, fill_with(a="1", b="2"))
    assert sorted(os.listdir(out)) == ["a", "b"] and (out / "a").read_text() == "1"
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)  # not mkdtemp's 0o700
    audit.write_atomically(out, fill_with(c="3"))
    assert os.listdir(out) == ["c"]  # the previous folder's files are gone with it
    assert os.listdir(out.parent) == ["audit"]  # no temp or old folder beside it


def test_write_atomically_leaves_the_previous_folder_when_fill_fails(tmp_path):
    out = tmp_path / "audit"
    audit.write_atomically(out, fill_with(a="old"))

    def failing(folder):
        (folder / "a").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        audit.write_atomically(out, failing)
    assert os.listdir(out) == ["a"] and (out / "a").read_text() == "old"
    with pytest.raises(OSError, match="disk full"):
        audit.write_atomically(tmp_path / "new", failing)
    assert os.listdir(tmp_path) == ["audit"]  # absent stays absent, no temp folder


def test_write_atomically_under_a_file_is_a_config_error_naming_out(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^--out: cannot create .*file is a file\)"):
        audit.write_atomically(tmp_path / "file" / "audit", fill_with(a="1"))
