"""Every bad input: exit code, one clear line, no traceback, nothing half-written.

Each case runs a script's ``main(argv)`` in-process (as ``python scripts/X.py`` would) and checks:
the exit code (2 for a user mistake, 3 for a diverged training), that stderr is exactly one
line starting with ``error:`` that contains the expected text, no traceback, and what is left on
disk: nothing under the output folder for inputs refused before work starts. The README's
"Bad input" table lists the same cases (a test keeps the two in step).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_TRAIN, binary_dataset, write_config, write_png

from seg import checkpoint
from seg.apps import audit as audit_app
from seg.apps import compare as compare_app
from seg.apps import evaluate as evaluate_app
from seg.apps import train as train_app
from seg.cli import run_main
from seg.config import config_to_dict, load_config, replace, save_config
from seg.models import build_model
from seg.run_data import prepare_data

SCRIPTS = {"train": train_app, "evaluate": evaluate_app, "compare": compare_app, "audit_masks": audit_app}
TINY = TINY_TRAIN


@dataclass
class Ctx:
    """Paths a case can use; ``out`` is the output folder that must stay empty."""

    tmp: Path
    synthetic: Path
    run: Path  # a run directory with config.yaml and checkpoints/best.pt (untrained model)

    @property
    def out(self) -> Path:
        return self.tmp / "runs"

    def train(self, *args: str, config: str | Path = REPO / "configs" / "synthetic.yaml") -> list[str]:
        return ["--config", str(config), f"run.out_dir={self.out}", f"data.root={self.synthetic}", *TINY, *args]

    def binary(self, **change) -> list[str]:
        """A binary dataset (4 images of 40 px, 0/255 squares) and its config; ``change`` edits files first."""
        root = binary_dataset(self.tmp / "binary", count=4)
        for name, array in change.items():
            write_png(root / name.replace("__", "/").replace("_png", ".png"), array)
        config = write_config(
            self.tmp / "binary.yaml",
            f"data: {{root: {root}, mask_format: binary, classes: [x], positive_values: [255], synthetic: false}}\n",
        )
        return ["--config", str(config), f"run.out_dir={self.out}", *TINY]


@dataclass
class Case:
    id: str
    script: str
    argv: Callable[[Ctx], list[str]]
    line: str  # text the one error line must contain
    code: int = 2
    left: str = "nothing"  # what stays on disk: nothing | failed-run | run-unchanged
    env: dict = field(default_factory=dict)
    cwd: str = "repo"  # the working directory: the repository root, or tmp (a folder outside it)


def _file(ctx: Ctx, name: str, content: bytes | str) -> Path:
    path = ctx.tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


CASES = [
    # ---- the config file and overrides
    Case(
        "config-missing", "train", lambda c: ["--config", str(c.tmp / "nope.yaml")], "nope.yaml: config file not found"
    ),
    Case(
        "config-binary-file",
        "train",
        lambda c: ["--config", str(_file(c, "b.yaml", b"\x89PNG\x00\xff\xfe"))],
        "b.yaml: not a text file",
    ),
    Case(
        "config-bad-yaml",
        "train",
        lambda c: ["--config", str(_file(c, "y.yaml", "train: [1,"))],
        "y.yaml: not valid YAML",
    ),
    Case(
        "config-not-a-mapping",
        "train",
        lambda c: ["--config", str(_file(c, "m.yaml", "- 1\n- 2\n"))],
        "expected a mapping of sections",
    ),
    Case(
        "config-unknown-key",
        "train",
        lambda c: ["--config", str(_file(c, "u.yaml", "train:\n  epoch: 3\n"))],
        "key 'train.epoch': unknown key",
    ),
    Case("override-unknown-key", "train", lambda c: c.train("train.nope=1"), "unknown key 'train.nope'"),
    Case("override-without-value", "train", lambda c: c.train("--set", "train.epochs"), "expected key=value"),
    Case("wrong-type", "train", lambda c: c.train("train.epochs=many"), "key 'train.epochs'"),
    Case(
        "epochs-zero",
        "train",
        lambda c: c.train("train.epochs=0"),
        "train.epochs': Input should be greater than or equal to 1",
    ),
    Case("epochs-negative", "train", lambda c: c.train("train.epochs=-1"), "train.epochs"),
    Case("batch-size-zero", "train", lambda c: c.train("train.batch_size=0"), "train.batch_size"),
    Case("batch-size-negative", "train", lambda c: c.train("train.batch_size=-4"), "train.batch_size"),
    Case("lr-negative", "train", lambda c: c.train("train.lr=-0.001"), "train.lr': Input should be greater than 0"),
    Case("lr-nan", "train", lambda c: c.train("train.lr=.nan"), "train.lr"),
    Case("weight-decay-negative", "train", lambda c: c.train("train.weight_decay=-1"), "train.weight_decay"),
    Case("num-workers-negative", "train", lambda c: c.train("data.num_workers=-1"), "data.num_workers"),
    Case("max-steps-zero", "train", lambda c: c.train("train.max_steps_per_epoch=0"), "train.max_steps_per_epoch"),
    Case("samples-per-epoch-zero", "train", lambda c: c.train("data.samples_per_epoch=0"), "data.samples_per_epoch"),
    Case("max-val-images-zero", "train", lambda c: c.train("data.max_val_images=0"), "data.max_val_images"),
    Case(
        "loss-term-unknown",
        "train",
        lambda c: c.train("loss.terms=[{name: jaccard}]"),
        "key 'loss.terms.0.name'",
    ),
    Case(
        "loss-term-parameter-not-its-own",
        "train",
        lambda c: c.train("loss.terms=[{name: dice, gamma: 2}]"),
        "dice takes form, smooth; gamma does not apply",
    ),
    Case(
        "loss-term-twice",
        "train",
        lambda c: c.train("loss.terms=[{name: bce}, {name: bce}]"),
        "lists a term twice",
    ),
    Case(
        "weighting-without-weighted-term",
        "train",
        lambda c: c.train("loss.terms=[{name: dice}]", "loss.weighting=global"),
        "loss.weighting global has no term to weight",
    ),
    Case(
        "focal-alpha-with-weighting",
        "train",
        lambda c: c.train("loss.terms=[{name: focal, alpha: 0.25}]", "loss.weighting=per_channel"),
        "focal alpha 0.25 and loss.weighting per_channel both weight positives",
    ),
    Case(
        "foreground-fraction-above-one",
        "train",
        lambda c: c.train("data.sampling=foreground", "data.foreground_fraction=1.5"),
        "data.foreground_fraction': must be a probability in [0, 1]",
    ),
    Case("crop-not-multiple-of-32", "train", lambda c: c.train("data.image_size=100"), "multiple of 32"),
    Case("val-fraction-one", "train", lambda c: c.train("data.val_fraction=1.0"), "data.val_fraction"),
    Case("test-fraction-one", "train", lambda c: c.train("data.test_fraction=1"), "data.test_fraction"),
    Case(
        "test-fraction-and-folder",
        "train",
        lambda c: c.train("data.test_fraction=0.2", "data.test_folder=val"),
        "data.test_fraction (0.2) and data.test_folder (val) both set",
    ),
    Case("test-folder-missing", "train", lambda c: c.train("data.test_folder=holdout"), "data.test_folder needs"),
    Case("test-folder-path", "train", lambda c: c.train("data.test_folder=../x"), "data.test_folder"),
    Case("structure-unknown", "train", lambda c: c.train("metrics.structure=[rand,dice]"), "metrics.structure"),
    Case(
        "structure-instance-many-channels",
        "train",
        lambda c: c.train("metrics.structure=[rand]", "metrics.objects_from=instance"),
        "metrics.objects_from: instance needs one channel",
    ),
    Case("compile-unknown", "train", lambda c: c.train("train.compile=[model,optimizer]"), "train.compile"),
    Case("val-every-zero", "train", lambda c: c.train("train.val_every=0"), "train.val_every"),
    Case("clamp-unordered", "train", lambda c: c.train("loss.clamp=[10,1]"), "0 < min <= max"),
    Case("clamp-zero", "train", lambda c: c.train("loss.clamp=[0,10]"), "loss.clamp"),
    Case("border-sigma-zero", "train", lambda c: c.train("loss.border.sigma=0"), "loss.border.sigma"),
    Case("border-w0-negative", "train", lambda c: c.train("loss.border.w0=-1"), "loss.border.w0"),
    Case("ema-one", "train", lambda c: c.train("loss.ema=1.0"), "loss.ema"),
    Case("log-images-negative", "train", lambda c: c.train("logging.wandb.log_images=-1"), "log_images"),
    Case(
        "wandb-name-unknown-key",
        "train",
        lambda c: c.train("logging.wandb.name={loss.weighting}-{train.nope}"),
        "is not a config key",
    ),
    Case("seed-negative", "train", lambda c: c.train("run.seed=-1"), "run.seed"),
    Case("run-name-with-dots", "train", lambda c: c.train("run.name=../../x"), "must be a plain name"),
    Case("run-name-with-slash", "train", lambda c: c.train("run.name=a/b"), "must be a plain name"),
    Case("threshold-unknown", "train", lambda c: c.train("metrics.threshold=best"), "metrics.threshold"),
    Case("weighting-unknown", "train", lambda c: c.train("loss.weighting=focal"), "loss.weighting"),
    Case(
        "all-zero-negatives-on-binary",
        "train",
        lambda c: c.binary() + ["loss.negatives=all_zero"],
        "all_zero applies to multilabel masks only",
    ),
    Case(
        "border-from-components-of-multilabel",
        "train",
        lambda c: c.train("loss.weighting=border_map", "loss.border.instances_from=positive"),
        "needs a binary mask",
    ),
    Case("pretrained-weights-offline", "train", lambda c: c.train("model.encoder_weights=imagenet"), "offline"),
    Case("batch-larger-than-epoch", "train", lambda c: c.train("data.samples_per_epoch=2"), "larger than the 2"),
    Case(
        "out-dir-under-a-file",
        "train",
        lambda c: c.train(f"run.out_dir={_file(c, 'f.txt', 'x')}/runs"),
        "cannot create",
    ),
    Case(
        "audit-out-under-a-file",
        "audit_masks",
        lambda c: [
            "--config",
            "configs/synthetic.yaml",
            "--set",
            f"data.root={c.synthetic}",
            "--out",
            f"{_file(c, 'f.txt', 'x')}/audit",
            "--no-progress",
        ],
        "f.txt is a file",
    ),
    Case(
        "compare-out-under-a-file",
        "compare",
        lambda c: [
            "--experiment",
            "experiments/weighting_synthetic.yaml",
            "--out",
            f"{_file(c, 'f.txt', 'x')}/results",
        ],
        "f.txt is a file",
    ),
    Case(
        "several-processes-without-torchrun",
        "train",
        lambda c: c.train(),
        "WORLD_SIZE=2 is set but MASTER_ADDR is not",
        env={"WORLD_SIZE": "2"},
    ),
    Case(
        "global-batch-not-divisible",
        "train",
        lambda c: c.train("train.batch_size=3", "--nproc", "2"),
        "train.batch_size: 3 does not divide by the 2 processes",
    ),
    Case("unknown-flag", "train", lambda c: c.train("--epochs", "3"), "unrecognized arguments: --epochs"),
    Case("no-config-flag", "train", lambda c: [], "the following arguments are required: --config"),
    # ---- data
    Case(
        "data-root-missing", "train", lambda c: c.binary() + [f"data.root={c.tmp / 'nowhere'}"], "data folder not found"
    ),
    Case(
        "image-without-mask",
        "train",
        lambda c: c.binary(images__extra_png=np.zeros((40, 40, 3), np.uint8)),
        "extra.png: image has no mask",
    ),
    Case(
        "mask-without-image",
        "train",
        lambda c: c.binary(masks__orphan_png=np.zeros((40, 40), np.uint8)),
        "orphan.png: mask has no image",
    ),
    Case(
        "mask-size-differs",
        "train",
        lambda c: c.binary(masks__img1_png=np.zeros((30, 40), np.uint8)),
        "img1.png: size 40x30 differs from its image",
    ),
    Case(
        "mask-interpolated-values",
        "train",
        lambda c: c.binary(masks__img1_png=np.full((40, 40), 128, np.uint8)),
        "value(s) 128 not valid for a binary mask",
    ),
    Case(
        "mask-rgb-for-binary",
        "train",
        lambda c: c.binary(masks__img1_png=np.zeros((40, 40, 3), np.uint8)),
        "a binary mask stored as RGB",
    ),
    Case(
        "mask-truncated",
        "train",
        lambda c: _truncate(c.binary(), c.tmp / "binary" / "masks" / "img1.png"),
        "img1.png: cannot read",
    ),
    Case("index-class-out-of-range", "train", lambda c: _index_data(c), "value(s) 14 not valid for an index mask"),
    Case(
        "positive-value-in-no-mask",
        "train",
        lambda c: c.binary() + ["data.positive_values=[7]"],
        "data.positive_values: 7 occurs in no training mask",
    ),
    Case(
        "synthetic-root-mistyped",
        "train",
        lambda c: c.train(f"data.root={c.tmp / 'sythetic'}"),
        "not found; data.synthetic generates only into data/synthetic or an existing empty folder",
    ),
    Case(
        "synthetic-root-holds-other-files",
        "train",
        lambda c: c.train(f"data.root={_file(c, 'notes.txt', 'x').parent}"),
        "holds files but no complete synthetic set",
    ),
    Case("mask-grey-alpha-for-binary", "train", lambda c: _pil_mask(c, "LA"), "a grey+alpha PNG"),
    Case("mask-palette-colours-for-binary", "train", lambda c: _pil_mask(c, "P"), "a palette PNG with colours"),
    # ---- training that diverges
    Case(
        "lr-diverges",
        "train",
        lambda c: c.train("train.lr=1e6", "train.epochs=3"),
        "training diverged",
        code=3,
        left="failed-run",
    ),
    # ---- evaluate.py
    Case("evaluate-run-missing", "evaluate", lambda c: ["--run", str(c.tmp / "nope")], "run directory not found"),
    Case(
        "evaluate-no-test-split",
        "evaluate",
        lambda c: ["--run", str(c.run), "--split", "test", "--wandb", "disabled"],
        "no labelled test split",
        left="run-unchanged",
    ),
    Case(
        "evaluate-checkpoint-unknown",
        "evaluate",
        lambda c: ["--run", str(c.run), "--checkpoint", "first"],
        "--checkpoint: invalid choice",
        left="run-unchanged",
    ),
    Case(
        "evaluate-overlays-negative",
        "evaluate",
        lambda c: ["--run", str(c.run), "--overlays", "-3"],
        "--overlays: must be at least 0",
        left="run-unchanged",
    ),
    Case(
        "evaluate-split-unknown",
        "evaluate",
        lambda c: ["--run", str(c.run), "--split", "train"],
        "--split: invalid choice",
        left="run-unchanged",
    ),
    Case(
        "evaluate-pickle-payload", "evaluate", lambda c: _payload(c), "refused without running it", left="run-unchanged"
    ),
    Case(
        "evaluate-truncated-checkpoint",
        "evaluate",
        lambda c: _rewrite_best(c, lambda b: b.write_bytes(b.read_bytes()[:1000])),
        "not a readable checkpoint",
        left="run-unchanged",
    ),
    Case(
        "evaluate-foreign-architecture",
        "evaluate",
        lambda c: _rewrite_best(
            c, lambda b: checkpoint.save_atomic({"model": build_model("Unet", "resnet34", None, 3).state_dict()}, b)
        ),
        "does not fit the model",
        left="run-unchanged",
    ),
    # ---- compare.py and audit_masks.py
    Case(
        "compare-experiment-missing",
        "compare",
        lambda c: ["--experiment", str(c.tmp / "nope.yaml")],
        "experiment file not found",
    ),
    Case(
        "compare-jobs-zero",
        "compare",
        lambda c: ["--experiment", "experiments/weighting_camvid.yaml", "--jobs", "0"],
        "--jobs: must be at least 1",
    ),
    Case(
        "compare-strategy-sets-train-keys",
        "compare",
        lambda c: [
            "--experiment",
            str(
                _file(
                    c,
                    "e.yaml",
                    (
                        "base: configs/synthetic.yaml\nstrategies:\n  none: {train.epochs: 9}\nseeds: [0]\n"
                        "profiles: {quick: {}}\n"
                    ),
                )
            ),
        ],
        "strategies may set loss.* keys and",
    ),
    Case(
        "compare-update-readme-without-readme",
        "compare",
        lambda c: [
            "--experiment",
            str(REPO / "experiments" / "weighting_synthetic.yaml"),
            "--update-readme",
            "--out",
            str(c.out),
        ],
        "README.md: not found; --update-readme updates the README.md of the folder you run from",
        cwd="tmp",
    ),
    Case(
        "audit-workers-zero",
        "audit_masks",
        lambda c: ["--config", "configs/synthetic.yaml", "--workers", "0"],
        "--workers: must be at least 1",
    ),
    Case("audit-masks-without-format", "audit_masks", lambda c: ["--masks", str(c.tmp)], "--masks needs --format"),
    Case("audit-no-source", "audit_masks", lambda c: [], "one of the arguments --config --masks is required"),
]


def _pil_mask(ctx: Ctx, mode: str) -> list[str]:
    """img1's mask saved as a grey+alpha ("LA") or colour palette ("P") PNG."""
    from PIL import Image

    argv = ctx.binary()
    path = ctx.tmp / "binary" / "masks" / "img1.png"
    grey = np.asarray(Image.open(path))
    if mode == "LA":
        image = Image.fromarray(np.stack([grey, np.full_like(grey, 200)], axis=-1), mode="LA")
    else:
        image = Image.fromarray((grey > 0).astype(np.uint8), mode="P")
        image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.save(path)
    return argv


def _index_data(ctx: Ctx) -> list[str]:
    """Two 8x8 images with index masks of 11 classes + ignore 11; one mask holds class 14."""
    root = ctx.tmp / "index"
    for stem, value in (("a", 0), ("b", 14)):
        write_png(root / "images" / f"{stem}.png", np.zeros((8, 8, 3), np.uint8))
        write_png(root / "masks" / f"{stem}.png", np.full((8, 8), value, np.uint8))
    config = write_config(
        ctx.tmp / "index.yaml",
        f"data: {{root: {root}, mask_format: index, classes: [a, b, c, d, e, "
        "f, g, h, i, j, k], ignore_index: 11, synthetic: false}\n",
    )
    return ["--config", str(config), f"run.out_dir={ctx.out}", *TINY]


def _truncate(argv: list[str], path: Path) -> list[str]:
    path.write_bytes(path.read_bytes()[:40])
    return argv


class _Payload:
    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payload(ctx: Ctx) -> list[str]:
    payload = _Payload()
    payload.marker = ctx.tmp / "payload-ran"
    return _rewrite_best(ctx, lambda best: torch.save({"model": {}, "epoch": payload}, best))


def _rewrite_best(ctx: Ctx, write: Callable[[Path], None]) -> list[str]:
    write(ctx.run / "checkpoints" / "best.pt")
    return ["--run", str(ctx.run), "--wandb", "disabled", "--no-progress"]


def make_run(root: Path, parent: Path) -> Path:
    """A run directory as training leaves it, with an untrained model (no training needed)."""
    cfg = load_config(
        REPO / "configs" / "synthetic.yaml",
        [f"run.out_dir={parent}", f"data.root={root}", "model.encoder=resnet18", "train.device=cpu"],
    )
    cfg = replace(cfg, data={"val_stems": prepare_data(cfg, progress=False).val_stems})
    run = parent / cfg.run.name
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    checkpoint.save_atomic(
        {
            "model": build_model("Unet", "resnet18", None, 3).state_dict(),
            "config": config_to_dict(cfg),
            "epoch": 1,
            "effective_pos_weight": [1.0] * 3,
        },
        run / "checkpoints" / "best.pt",
    )
    return run


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "checkpoints" not in p.parts)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, synthetic_root, capsys, monkeypatch):
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO if case.cwd == "repo" else tmp_path)
    ctx = Ctx(
        tmp_path,
        synthetic_root,
        make_run(synthetic_root, tmp_path / "made") if case.script == "evaluate" else tmp_path / "no-run",
    )
    argv = case.argv(ctx)
    before = _listing(ctx.run) if ctx.run.exists() else None
    code = run_main(SCRIPTS[case.script].main, argv)
    err = capsys.readouterr().err.strip()
    assert code == case.code, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err and case.line in err, err
    if case.left == "nothing":
        assert not ctx.out.exists() or not any(ctx.out.iterdir()), _listing(ctx.out)
    elif case.left == "failed-run":
        run = ctx.out / "synthetic"
        assert (run / "FAILED").is_file() and not (run / "summary.json").exists()
    elif case.left == "run-unchanged":
        assert _listing(ctx.run) == before
    assert not (tmp_path / "payload-ran").exists()


def test_readme_table_lists_every_case():
    """The README's "Bad input" table has one row per case: same id, same exit code."""
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|.*\| (\d) \|$", text, flags=re.M)
    assert dict((name, int(code)) for name, code in rows) == {c.id: c.code for c in CASES}
    assert len(CASES) >= 40
