"""seg/audit/report.py: report.md and the plots from mask_stats.json's content (run_audit, which writes
them into the audit folder, is tested in tests/test_audit.py)."""

import numpy as np
from conftest import audit_stats, masks_folder, problem_folder

from seg import audit
from seg.config.specs import MaskSpec

BINARY = MaskSpec("binary", ("fg",), (255,))
PNG = b"\x89PNG\r\n\x1a\n"


def test_report_lists_channels_plots_and_problems(tmp_path):
    masks = problem_folder(tmp_path / "data")
    stats = audit_stats(audit.plan_from_masks(masks, BINARY, out=str(tmp_path / "out")))
    report = audit.render_report(stats, ["positive_fraction.png"])
    assert report.startswith("# Mask audit: ") and report.endswith("\n")
    assert "| fg | 25% |" in report and "![positive_fraction.png](positive_fraction.png)" in report
    assert "image_positive_fraction.png" not in report  # only the plots it is given
    assert f"## Problems ({len(stats['problems'])})" in report
    assert "`masks/interp.png`" in report and "unexpected_values" in report  # relative to the data folder


def test_clean_masks_report_no_problems_and_write_two_plots(tmp_path):
    one = np.array([[0, 0], [0, 255]], np.uint8)
    masks = masks_folder(tmp_path / "data", {"a": one, "b": np.zeros((2, 2), np.uint8)})
    stats = audit_stats(audit.plan_from_masks(masks, BINARY, out=str(tmp_path / "out")))
    report = audit.render_report(stats, [])
    assert "| fg | 12.5% |" in report  # 1 positive pixel of 8
    assert report.endswith("## Problems (0)\n\nNone found.\n")
    plots = audit.write_plots(stats, tmp_path)  # no object statistics: no object_sizes.png
    assert plots == ["positive_fraction.png", "image_positive_fraction.png"]
    assert all((tmp_path / name).read_bytes().startswith(PNG) for name in plots)
