"""seg/audit/report.py (and run_audit, which writes it): report.md and plots, written atomically."""

import json

import pytest
from conftest import problem_folder

from seg import audit
from seg.config.specs import MaskSpec

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
