"""The results table printed at the end of a training run."""

from __future__ import annotations


def _cell(value: float | None) -> str:
    return "  nan " if value is None else f"{value:.4f}"


def results_table(summary: dict, class_names: list[str]) -> str:
    """Per-channel Dice/IoU under each threshold policy, plus the macro average."""
    val = summary["val"]
    policies = list(val.get("by_threshold", {"0.5": val}))
    header = f"{'channel':<16}" + "".join(f"{'dice@' + p:>22}{'iou@' + p:>22}" for p in policies)
    lines = [header, "-" * len(header)]
    blocks = [val.get("by_threshold", {}).get(p, val) for p in policies]
    for name in class_names:
        lines.append(f"{name:<16}" + "".join(f"{_cell(b['per_channel'][name]['dice']):>22}"
                                              f"{_cell(b['per_channel'][name]['iou']):>22}" for b in blocks))
    lines.append(f"{'macro':<16}" + "".join(f"{_cell(b['dice']):>22}{_cell(b['iou']):>22}" for b in blocks))
    return "\n".join(lines)


def print_results(summary: dict, class_names: list[str]) -> None:
    print()
    print(f"weighting: {summary['weighting']}   effective pos_weight: "
          + ", ".join(f"{q:.3g}" for q in summary["effective_pos_weight"])
          + f"   epochs: {summary['epochs_completed']} (best {summary['best_epoch']})"
          + f"   empty policy: {summary['val'].get('empty_policy')}")
    print(results_table(summary, class_names))
