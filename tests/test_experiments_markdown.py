"""Tests for seg/experiments/markdown.py: results.md's header sentences and table cells, formatted by hand."""

from seg.experiments.manifest import Budget, Manifest
from seg.experiments.markdown import budget_text, provenance_text, results_markdown
from seg.results import Provenance

BUDGET_KEYS = {
    "epochs": 5,
    "image_size": 160,
    "samples_per_epoch": 256,
    "batch_size": 8,
    "max_steps_per_epoch": None,
    "max_val_images": 25,
    "arch": "Unet",
    "encoder": "resnet18",
    "encoder_weights": None,
    "lr": 0.001,
    "normalize": True,
}
BUDGET = Budget.from_dict(BUDGET_KEYS)


def manifest(**changes) -> Manifest:
    """experiment.json, as the grid writes it, for 2 strategies x 3 seeds on 2 channels."""
    strategies = {"none": ["loss.weighting=none"], "global": ["loss.weighting=global"]}
    command = "python scripts/compare.py --experiment toy.yaml --profile quick"
    return Manifest.from_dict(
        {
            "experiment": "toy",
            "profile": "quick",
            "title": "Toy grid",
            "experiment_file": "toy.yaml",
            "base": "configs/synthetic.yaml",
            "command": command,
            "aggregate_command": command + " --aggregate-only",
            "results_dir": None,
            "strategies": strategies,
            "seeds": [0, 1, 2],
            "reference": "none",
            "runs": [{"name": f"{s}-s{seed}", "strategy": s, "seed": seed} for s in strategies for seed in (0, 1, 2)],
            "classes": ["cell", "speck"],
            "data": {"root": "data/toy", "mask_format": "multilabel", "split_seed": 0},
            "budget": BUDGET_KEYS,
            "train_positive_fraction": {"cell": 0.35, "speck": 0.0042},
            "wandb": {"mode": "disabled", "project": "seg", "group": "toy", "out_dir": "runs"},
            "trained_with": {"none-s0": {"jobs": 2, "machine": "a laptop"}},
            **changes,
        }
    )


def row(strategy, quantity, variant, channel, n, mean, half=None, sd=0.0, diff=None) -> dict:
    """A row of aggregate(): mean ± half over n seeds; ``diff`` = (n, mean, low, high) against the reference."""
    d_n, d_mean, d_low, d_high = diff or (None, None, None, None)
    return {
        "strategy": strategy,
        "quantity": quantity,
        "variant": variant,
        "channel": channel,
        "n": n,
        "mean": mean,
        "sd": sd,
        "ci_low": None if half is None else mean - half,
        "ci_high": None if half is None else mean + half,
        "diff_n": d_n,
        "diff_mean": d_mean,
        "diff_ci_low": d_low,
        "diff_ci_high": d_high,
    }


ROWS = [
    row("none", "dice", "0.5", "macro", 3, 0.7, 0.05),
    row("global", "dice", "0.5", "macro", 3, 0.8, 0.02, diff=(3, 0.1, 0.05, 0.15)),  # excludes 0: bold
    row("none", "iou", "0.5", "macro", 2, 0.6, 0.1),  # 2 of 3 seeds: (n=2)
    row("global", "iou", "0.5", "macro", 1, 0.5, diff=(1, -0.02, None, None)),  # one value: no interval
    row("global", "dice", "tuned", "macro", 3, 0.9, 0.01, diff=(3, 0.004, -0.01, 0.018)),  # contains 0
    row("none", "dice", "0.5", "cell", 3, 0.9, 0.01),
    row("global", "dice", "0.5", "speck", 3, 0.25, 0.125, diff=(3, 0.25, 0.125, 0.375)),
    row("none", "effective_pos_weight", "", "speck", 3, 1.0),
    row("global", "effective_pos_weight", "", "speck", 3, 410.0, sd=10.0),
    row("global", "effective_pos_weight", "", "cell", 3, 1.857142857, sd=1e-6),  # sd under 5e-4 of the mean
    row("none", "wall_time_per_epoch_s", "", "", 3, 12.345, 0.5),
]


def table_row(text: str, first_cell: str, after: str) -> str:
    """The line of the first table after the line ``after`` whose first cell is ``first_cell``."""
    lines = text.splitlines()
    start = lines.index(after)
    return next(line for line in lines[start:] if line.startswith(f"| {first_cell} |"))


def test_results_markdown_header_by_hand():
    text = results_markdown(manifest(), ROWS, [None] * 6)
    lines = text.splitlines()
    assert lines[0] == "### Toy grid: `toy`, profile `quick`"
    assert (
        "- **Data**: `data/toy` (multilabel masks), split seed 0; channels (positive pixels in the training split): "
        "cell 35.0%, speck 0.42%." in lines
    )
    assert lines[3].startswith("- **Grid**: 2 strategies x 3 seeds (0, 1, 2) = 6 runs; ")
    assert f"- **Budget**: {budget_text(BUDGET)}." in lines
    assert "- **Provenance**: not recorded (runs trained before provenance was written into summary.json)." in lines
    assert "no difference is detectable with 3 seeds" in text and "Differences from `none` are paired by seed" in text
    assert text.endswith("Every number, per channel and for IoU too, is in `results.csv` beside this file.\n")


def test_results_markdown_cells_by_hand():
    text = results_markdown(manifest(), ROWS, [None] * 6)
    macro = "#### Macro scores (mean over channels)"
    # mean ± (ci_high - mean); (n=k) when fewer seeds than the grid's; a dash where no row exists
    assert table_row(text, "none", macro) == "| none | 0.700 ± 0.050 | 0.600 ± 0.100 (n=2) | – | – | – | – | 12.3 |"
    assert table_row(text, "global", macro) == (
        "| global | 0.800 ± 0.020 | 0.500 (n=1) | – | 0.900 ± 0.010 | – | – | – |"
    )
    measured = "measured on a laptop with --jobs 2."
    assert f"s / epoch: mean wall time of an epoch (training and validation), {measured}" in text
    differences = "#### Macro differences from `none` (paired by seed)"
    assert table_row(text, "global", differences) == (
        "| global | **+0.100 [+0.050, +0.150]** | -0.020 (n=1) | – | +0.004 [-0.010, +0.018] | – |"
    )
    assert "| none |" not in text.split(differences)[1].split("####")[0]  # the reference is not its own row
    # one per-channel table per policy, under its label
    for label in ("0.5", "prior-corrected", "tuned on val (optimistic)"):
        assert f"#### Per-channel Dice, threshold {label}" in text
    per_channel = "#### Per-channel Dice, threshold 0.5"
    assert table_row(text, "strategy", per_channel) == "| strategy | cell (35.0%) | speck (0.42%) |"
    assert table_row(text, "none", per_channel) == "| none | 0.900 ± 0.010 | – |"
    assert table_row(text, "global", "#### Per-channel Dice minus `none` (paired by seed), threshold 0.5") == (
        "| global | – | **+0.250 [+0.125, +0.375]** |"
    )
    weights = "#### Applied weights: effective pos_weight in the last epoch"
    assert table_row(text, "none", weights) == "| none | – | 1 |"
    assert table_row(text, "global", weights) == "| global | 1.86 | 410 (sd 10) |"  # 3 significant digits
    assert "![Dice with 95% intervals](./dice_per_channel.png)" in text
    assert "![Dice against channel frequency](./dice_vs_frequency.png)" in text


def test_one_channel_has_no_per_channel_tables_and_one_plot():
    text = results_markdown(manifest(classes=["cell"], results_dir="experiments/results/toy-quick"), ROWS, [None] * 6)
    assert "Per-channel Dice" not in text and "dice_vs_frequency" not in text
    assert "![Dice with 95% intervals](/experiments/results/toy-quick/dice_per_channel.png)" in text


def test_budget_text_by_hand():
    assert budget_text(BUDGET) == (
        "5 epochs of 256 random crops of 160 px per epoch (batch 8), Unet/resnet18 (from scratch), lr 0.001, "
        "loss.normalize true, validation on the first 25 validation images"
    )
    other = BUDGET_KEYS | {"epochs": 1, "samples_per_epoch": None, "max_steps_per_epoch": 4, "max_val_images": None}
    other |= {"encoder_weights": "imagenet", "normalize": False}
    assert budget_text(Budget.from_dict(other)) == (
        "1 epoch of one random crop per training image of 160 px per epoch (batch 8, at most 4 steps per epoch), "
        "Unet/resnet18 (imagenet), lr 0.001, loss.normalize false, validation on every validation image"
    )


def provenance(commit, dirty) -> Provenance:
    versions = {"python": "3.11.9", "torch": "2.5.1", "numpy": "2.1.0", "wandb": "0.18"}
    device = {"type": "cpu", "name": "Xeon", "torch_threads": 2}
    return Provenance(commit=commit, dirty=dirty, command="compare.py", versions=versions, device=device)


def test_provenance_text_by_hand():
    assert provenance_text([None, None]).startswith("not recorded")
    clean = provenance("0123456789abcdef", False)
    tail = "; python 3.11.9, torch 2.5.1, numpy 2.1.0; Xeon, 2 threads. Each run's full record is in "
    tail += "`runs/<run>.json` (`provenance`)."
    assert provenance_text([clean, clean]) == "trained at commit `0123456789`, clean tree" + tail
    mixed = [clean, None, provenance("fedcba9876543210", True), provenance(None, False)]
    assert provenance_text(mixed) == (
        "trained from commit `0123456789` to `unknown` (3 commits: 0123456789, fedcba9876, unknown), "
        "1 of 3 runs with uncommitted changes; 1 runs without a record" + tail
    )


def test_budget_check_by_hand():
    """cell f = 0.35: predicting it everywhere scores 2f/(1+f) = 0.7/1.35 = 0.5185; speck f = 0.0042: 0.00836."""
    rows = ROWS + [
        row("none", "dice", "tuned", "macro", 3, 0.5, 0.05),
        row("none", "dice", "tuned", "cell", 3, 0.6, 0.05),  # margin +0.081: learned
        row("none", "dice", "tuned", "speck", 3, 0.05, 0.02),  # margin +0.042: not learned
        row("none", "curve_change", "tuned", "macro", 3, 0.004, 0.001),
    ]
    text = results_markdown(manifest(), rows, [None] * 6)
    check = "#### Budget check: has `none` learned every channel, and converged?"
    assert table_row(text, "cell", check) == "| cell | 35.0% | 0.519 | 0.600 ± 0.050 | +0.081 | yes |"
    assert table_row(text, "speck", check) == "| speck | 0.42% | 0.008 | 0.050 ± 0.020 | +0.042 | **no** |"
    assert "moved by 0.004 (max - min over those epochs and the one before, mean over 3 seeds): flat" in text
    still = results_markdown(
        manifest(), rows[:-1] + [row("none", "curve_change", "tuned", "macro", 3, 0.02)], [None] * 6
    )
    assert "moved by 0.020" in still and "**still moving**" in still
    assert "do not record the validation curve" in results_markdown(manifest(), rows[:-1], [None] * 6)
    assert "Budget check" not in results_markdown(manifest(), ROWS, [None] * 6)  # no tuned score of the reference
