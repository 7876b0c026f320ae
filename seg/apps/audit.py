"""Audit a dataset's masks: per-channel counts, problems, and the pos_weight to use.

    python scripts/audit_masks.py --config configs/camvid.yaml            # training split
    python scripts/audit_masks.py --config configs/isbi2012.yaml --split all --objects
    python scripts/audit_masks.py --masks data/x/masks --format binary --positive-values 255

Writes mask_stats.json, report.md and plots into --out (default runs/audit-<dataset>),
atomically; --wandb also logs them as a W&B run (job_type audit; offline unless --wandb online).
Problems in the data are listed there and do not fail the audit (exit 0);
exit 2 when the audit cannot run (no masks, bad arguments, bad config).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from seg.cli import ArgumentParser, add_common_arguments, add_override_argument, at_least, quiet_environment
from seg.config import ConfigError, MaskSpec

SCRIPT = "scripts/audit_masks.py"  # the command provenance records (as typed at the repository root)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def parse_args(argv):
    parser = ArgumentParser(prog="audit_masks.py", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="training config (YAML): audits its data.root as training reads it")
    source.add_argument("--masks", type=Path, help="a folder of masks (images in a sibling images/)")
    add_override_argument(parser, "config override (repeatable)")
    parser.add_argument("--format", choices=["binary", "index", "multilabel", "instance"], help="with --masks")
    parser.add_argument(
        "--classes",
        help="with --masks: channel names, comma-separated "
        "(default: 'foreground' for binary/instance; required for index/multilabel)",
    )
    parser.add_argument(
        "--positive-values",
        type=_int_list,
        help="with --masks, binary/instance: mask values of the positive class (default 1,255)",
    )
    parser.add_argument("--ignore-index", type=int, help="with --masks, index: class value to ignore")
    parser.add_argument("--out", help="output folder (default runs/audit-<dataset>)")
    parser.add_argument("--workers", type=at_least(1), help="worker processes (default: the CPUs available, at most 8)")
    parser.add_argument(
        "--split",
        choices=["train", "val", "all"],
        help="which masks to count (default: train with --config, all with --masks)",
    )
    parser.add_argument(
        "--objects",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="object statistics (instances or connected components); default on for instance masks",
    )
    parser.add_argument(
        "--objects-from",
        choices=["instance", "positive", "negative"],
        help="objects are the instance labels, or connected components of the positive/negative "
        "class (default: instance for instance masks, loss.border.instances_from for binary "
        "configs, else positive)",
    )
    parser.add_argument(
        "--connectivity",
        type=int,
        choices=[4, 8],
        help="with --masks: component connectivity (default 4; with --config: loss.border.connectivity)",
    )
    parser.add_argument(
        "--wandb",
        nargs="?",
        const="offline",
        choices=["offline", "online", "disabled"],
        default="disabled",
        help="log the plots and counts as a W&B run (job_type audit) under --out/wandb; "
        "--wandb alone: offline (default: no W&B)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    masks_only = [
        f"--{n.replace('_', '-')}"
        for n in ("format", "classes", "positive_values", "ignore_index", "connectivity")
        if getattr(args, n) is not None
    ]
    if args.config and masks_only:
        parser.error(
            f"{', '.join(masks_only)} go with --masks; with --config the config says it "
            "(override with --set data.KEY=VALUE)"
        )
    if args.masks and args.overrides:
        parser.error("--set goes with --config")
    if args.masks and not args.format:
        parser.error("--masks needs --format binary|index|multilabel|instance")
    return args


_OPTIONS = {  # the data keys --masks sets, and the options that set them (the first named is blamed)
    "data.classes": "--classes",
    "data.positive_values": "--positive-values",
    "data.ignore_index": "--ignore-index",
    "data.mask_format": "--format",
}


def _option_error(err: ConfigError) -> ConfigError:
    """A schema error about the data keys, said with the options that set them (one line).

    ``--masks: key 'data': data.classes has ...`` -> ``--classes has ...``;
    ``--masks: key 'data.ignore_index': Input should be ...`` -> ``--ignore-index: Input should be ...``.
    """
    text = str(err).removeprefix("--masks: ")
    key, message = "", text
    if text.startswith("key '") and "': " in text:
        key, message = text.removeprefix("key '").split("': ", 1)
    option = next((o for name, o in _OPTIONS.items() if key.startswith(name)), None)
    option = option or next((o for name, o in _OPTIONS.items() if name in message), "--masks")
    for name, other in _OPTIONS.items():
        message = message.replace(name, other)
    return ConfigError(message if message.startswith(option) else f"{option}: {message}")


def spec_from_args(args) -> MaskSpec:
    """The MaskSpec of ``--masks``: the options merged into configs/base.yaml's data section, validated as a config."""
    from seg.config import BASE_CONFIG, deep_merge, mask_spec, read_yaml, validate

    classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
    data: dict = {"mask_format": args.format, "positive_values": None, "ignore_index": None}
    if args.format in ("binary", "instance"):
        classes = classes or ["foreground"]
        data["positive_values"] = list(args.positive_values or (1, 255))
    elif not classes:
        raise ConfigError(f"--classes is required for {args.format} masks (channel names in channel order)")
    elif args.format == "index":
        data["ignore_index"] = args.ignore_index
    data["classes"] = classes
    try:
        cfg = validate(deep_merge(read_yaml(BASE_CONFIG), {"data": data}), "--masks")
    except ConfigError as err:
        raise _option_error(err) from None
    return mask_spec(cfg)


def main(argv=None) -> int:
    quiet_environment()
    args = parse_args(argv)
    from seg import audit
    from seg.config import load_config
    from seg.weighting.registry import check_config

    project = "seg"  # the W&B project (--wandb): the config's, with --config
    if args.config:
        cfg = load_config(args.config, args.overrides)
        project = cfg.logging.wandb.project
        check_config(cfg)  # the whole config is refused before any work, loss.weighting included
        plan = audit.plan_from_config(
            cfg, args.config, args.split or "train", args.out, args.objects, args.objects_from
        )
    else:
        plan = audit.plan_from_masks(
            args.masks,
            spec_from_args(args),
            args.split or "all",
            args.out,
            args.objects,
            args.objects_from,
            args.connectivity or 4,
        )
    start = time.perf_counter()
    stats = audit.run_audit(plan, args.workers, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    print(
        f"audited {stats['images']} masks of {stats['dataset']} ({stats['split']} split) in {seconds:.1f} s: "
        f"{len(stats['problems'])} problem(s)"
    )
    for channel in stats["channels"]:
        w = channel["pos_weight"]
        all_zero = f" / {w['all_zero']:g} (all_zero)" if stats["format"]["mask_format"] == "multilabel" else ""
        print(
            f"  {channel['name']:>16}: {100 * (channel['positive_fraction'] or 0):8.4f}% positive, "
            f"pos_weight {w['pixels']:g} (pixels){all_zero}"
        )
    for kind, count in stats["problem_counts"].items():
        print(f"  problem {kind}: {count}")
    print(f"wrote {plan.out_dir}/mask_stats.json, report.md, {', '.join(stats['plots'])}")
    if args.wandb != "disabled":
        from seg.audit.logged import log_audit

        log_audit(stats, plan.out_dir, args.wandb, project)
        print(f"W&B ({args.wandb}): {plan.out_dir}/wandb")
    return 0
