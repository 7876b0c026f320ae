"""An audit as a W&B run (``audit.py --wandb``): job_type audit, the plots as images, one table row per
channel, and the headline counts in the summary. Written under ``<audit folder>/wandb/``."""

from __future__ import annotations

from pathlib import Path

from seg.tracking import RUN_ID_FILE, Tracker

CHANNEL_COLUMNS = (
    "channel",
    "positive_fraction",
    "positive_pixels",
    "total_pixels",
    "images_with_positives",
    "empty_images",
    "pos_weight",
    "pos_weight_all_zero",
)


def channel_rows(stats: dict) -> list[list]:
    """One row per channel of mask_stats.json (CHANNEL_COLUMNS; pos_weight over pixels and over all-zero pixels)."""
    return [
        [
            channel["name"],
            channel["positive_fraction"],
            channel["positive_pixels"],
            channel["total_pixels"],
            channel["images_with_positives"],
            channel["empty_images"],
            channel["pos_weight"]["pixels"],
            channel["pos_weight"].get("all_zero"),
        ]
        for channel in stats["channels"]
    ]


def log_audit(stats: dict, folder: Path, mode: str, project: str) -> None:
    """Log the audit written to ``folder`` (its mask_stats.json content ``stats``) as a W&B run of its own."""
    if mode == "disabled":
        return
    (folder / RUN_ID_FILE).unlink(missing_ok=True)  # a fresh W&B run per audit
    name = f"audit-{stats['dataset']}-{stats['split']}"
    config = {key: stats[key] for key in ("dataset", "split", "format", "source", "clamp")}
    tracker = Tracker(folder, mode, project, f"audit-{stats['dataset']}", name, config, ["audit"], job_type="audit")
    tracker.log_image_files({f"audit/{Path(plot).stem}": folder / plot for plot in stats["plots"]})
    tracker.log_table("audit/channels", list(CHANNEL_COLUMNS), channel_rows(stats))
    tracker.summary(
        {
            "images": stats["images"],
            "masks_not_counted": stats["masks_not_counted"],
            "global_pos_weight": stats["global_pos_weight"],
            **{f"problems/{kind}": count for kind, count in stats["problem_counts"].items()},
        }
    )
    tracker.finish()
