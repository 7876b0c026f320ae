"""Mask audit: what is in the masks, what is wrong with them, which pos_weight to use.

``plan_from_config`` / ``plan_from_masks`` find the masks (a tolerant scan that lists
every problem instead of stopping at the first) and pick the split; ``run_audit``
reads every mask once in worker processes (``seg.data.parallel.map_chunks``), merges the
partial tallies and writes ``mask_stats.json``, ``report.md`` and plots into the output
folder, atomically. Decoding, value checks and counting are ``seg.data.counts.measure_mask``
(training's decoder, tolerant); the split is ``seg.data.folders.seeded_val_stems``; the
recommended weights come from ``seg.weighting.formulas``. Layout of the output: README.md, "Audit your masks first".

Modules: ``scan`` (finding the files, the plan), ``tally`` (reading and counting, in
workers), ``summary`` (mask_stats.json), ``report`` (plots and report.md); this module
writes the folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from seg.audit.report import (
    MAX_REPORT_PROBLEMS,
    plot_image_fractions,
    plot_object_sizes,
    plot_positive_fraction,
    render_report,
    write_plots,
)
from seg.audit.scan import (
    OBJECT_SOURCES,
    SPLITS,
    AuditItem,
    AuditPlan,
    AuditSettings,
    dataset_name,
    plan_from_config,
    plan_from_masks,
    scan_folder,
)
from seg.audit.summary import (
    SCHEMA_VERSION,
    absent_positive_problems,
    build_stats,
    never_positive_problems,
    recommended_pos_weights,
)
from seg.audit.tally import FRACTION_EDGES, LOG2_BINS, AuditTally, ObjectTally, audit_chunk, tally_masks
from seg.data.parallel import default_workers
from seg.files import json_text, make_folder

__all__ = [
    "FRACTION_EDGES",
    "LOG2_BINS",
    "MAX_REPORT_PROBLEMS",
    "OBJECT_SOURCES",
    "SCHEMA_VERSION",
    "SPLITS",
    "AuditItem",
    "AuditPlan",
    "AuditSettings",
    "AuditTally",
    "ObjectTally",
    "absent_positive_problems",
    "audit_chunk",
    "build_stats",
    "dataset_name",
    "never_positive_problems",
    "plan_from_config",
    "plan_from_masks",
    "plot_image_fractions",
    "plot_object_sizes",
    "plot_positive_fraction",
    "recommended_pos_weights",
    "render_report",
    "run_audit",
    "scan_folder",
    "tally_masks",
    "write_atomically",
    "write_plots",
]

# ------------------------------------------------------------------ writing, atomically


def write_atomically(out_dir: Path, fill) -> None:
    """Build the folder with ``fill(tmp)`` in a temp folder beside ``out_dir``, then rename it into place.

    A failure leaves ``out_dir`` as it was (absent, or the previous audit) and no temp folder behind.
    """
    out_dir = Path(out_dir)
    make_folder(out_dir.parent, "--out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    try:
        fill(tmp)
        tmp.chmod(0o755)
        if out_dir.exists():
            os.rename(out_dir, old)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if old.exists():
                os.rename(old, out_dir)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def run_audit(plan: AuditPlan, workers: int | None = None, progress: bool = True) -> dict:
    """Read every mask of ``plan``, write the audit folder ``plan.out_dir``; return mask_stats.json's content."""
    tally = tally_masks(plan.items, plan.settings, workers or default_workers(), progress)
    stats = build_stats(tally, plan)

    def fill(folder: Path) -> None:
        stats["plots"] = write_plots(stats, folder)  # looked up here: tests patch seg.audit.write_plots
        (folder / "mask_stats.json").write_text(json_text(stats, indent=1) + "\n")
        (folder / "report.md").write_text(render_report(stats, stats["plots"]))

    write_atomically(plan.out_dir, fill)
    return stats
