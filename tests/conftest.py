"""Shared fixtures: offline, quiet environment; tiny datasets written on the fly; real data."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]

# Overrides that make a training run take seconds (2 steps of 64 px crops, a small encoder, no W&B).
TINY_TRAIN = [
    "data.image_size=64",
    "train.batch_size=4",
    "train.max_steps_per_epoch=2",
    "data.max_val_images=2",
    "model.encoder=resnet18",
    "logging.wandb.mode=disabled",
    "--no-progress",
]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped where torch sees no CUDA device (CI); on a GPU they run."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _wandb_home(tmp_path_factory, monkeypatch):
    """W&B writes under the home folder unless told otherwise: keep it in a temp folder."""
    home = tmp_path_factory.mktemp("wandb_home")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The generated multilabel set, small (12 images of 72 px), shared by every test that only reads it."""
    from seg.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic", count=12, size=72)


def shared_data(name: str) -> Path:
    """A dataset from ../shared/data (SEG_SHARED_DATA); fails under CI when missing, else skips."""
    root = Path(os.environ.get("SEG_SHARED_DATA", REPO.parent / "shared" / "data")) / name
    if not root.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{root}: shared data missing (required under CI)")
        pytest.skip(f"{root}: shared data not available")
    return root


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array)
    return path


def binary_dataset(root: Path, count: int = 4, size: int = 40, seed: int = 0) -> Path:
    """images/ + masks/ (0/255 squares) for binary tests."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 10, size=2)
        mask[y : y + 10, x : x + 10] = 255
        write_png(root / "images" / f"img{i}.png", image)
        write_png(root / "masks" / f"img{i}.png", mask)
    return root


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_close_tree(got, expected, rel: float = 1e-5, abs_: float = 1e-7, where: str = "") -> None:
    """Nested dicts/lists equal in structure, strings and None exactly, numbers within tolerance.

    For results computed by two different float32 code paths (the production evaluation and an
    independent pass in a test): they agree to float32 precision, not bit for bit, since the
    vectorised path of the CPU and the torch build change the last bits.
    """
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), f"{where}: keys {sorted(got)} != {sorted(expected)}"
        for key in expected:
            assert_close_tree(got[key], expected[key], rel, abs_, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), f"{where}: {got} != {expected}"
        for i, (a, b) in enumerate(zip(got, expected, strict=False)):
            assert_close_tree(a, b, rel, abs_, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(got, bool):
        assert got == pytest.approx(expected, rel=rel, abs=abs_), f"{where}: {got} != {expected}"
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def random_case(seed, n=4, c=3, h=8, w=12, ignore=True, empty_channels=True):
    """Metric tests: random logits/targets with rare positives; some (image, channel) pairs forced empty."""
    import torch

    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, c, h, w, generator=g) < 0.15).float()
    logits = torch.randn(n, c, h, w, generator=g) * 2 + 2.5 * (2 * target - 1) - 0.5
    if empty_channels and c > 1:
        target[0, 1] = 0  # empty truth, and no predictions either:
        logits[0, 1] = -3
    valid = torch.rand(n, 1, h, w, generator=g) > 0.2 if ignore else None
    return logits, target, valid


# ------------------------------------------------------- PNG colour types (test_data_reading.py, test_run_data.py)

GREY = np.array([[0, 255, 255], [0, 0, 255]], np.uint8)  # la_png's grey plane
ALPHA = np.array([[255, 255, 0], [0, 0, 0]], np.uint8)  # la_png's alpha plane: differs from the grey


def la_png(path: Path, grey: np.ndarray = GREY, alpha: np.ndarray = ALPHA) -> Path:
    """A grey+alpha PNG (colour type 4), written by PIL."""
    from PIL import Image

    Image.fromarray(np.stack([grey, alpha], axis=-1), mode="LA").save(path)
    return path


def palette_png(path: Path, indices: np.ndarray, palette: list[int], **save) -> Path:
    """A palette PNG (colour type 3) of ``indices`` into ``palette`` (flat RGB), written by PIL; ``save``: e.g.
    ``transparency`` (one alpha byte per palette entry: a tRNS chunk)."""
    from PIL import Image

    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    image.save(path, **save)
    return path


# ------------------------------------------------------- synthetic data (test_data_synthetic.py, test_run_data.py)


@pytest.fixture
def small_generate(monkeypatch):
    """ensure_synthetic generates 4 tiny images (the default 48 of 144x144 are slow for a test)."""
    from functools import partial

    from seg.data import synthetic

    monkeypatch.setattr(synthetic, "generate", partial(synthetic.generate, count=4, size=24))


# ------------------------------------------------------------------ mask audits (test_audit_*.py, test_apps_audit.py)


def masks_folder(root: Path, masks: dict[str, np.ndarray], images: bool = True) -> Path:
    """root/masks/<stem>.png (and root/images/<stem>.png of the same size) from arrays."""
    for stem, mask in masks.items():
        write_png(root / "masks" / f"{stem}.png", mask)
        if images:
            write_png(root / "images" / f"{stem}.png", np.zeros(mask.shape[:2] + (3,), np.uint8))
    return root / "masks"


def problem_folder(root: Path) -> Path:
    """One file for every problem kind the audit must find."""
    ok = np.zeros((4, 4), np.uint8)
    ok[1:3, 1:3] = 255
    masks = masks_folder(
        root, {"good": ok, "interp": np.where(ok > 0, 255, 0).astype(np.uint8), "badimage": ok, "big": ok}
    )
    interp = ok.copy()
    interp[0, 0] = 128  # a 0/255 mask resized with interpolation
    write_png(masks / "interp.png", interp)
    (root / "masks" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    write_png(root / "images" / "corrupt.png", np.zeros((4, 4, 3), np.uint8))
    (root / "images" / "badimage.png").write_bytes(b"garbage")
    write_png(root / "images" / "big.png", np.zeros((8, 6, 3), np.uint8))  # mask is 4x4
    write_png(root / "images" / "orphan_image.png", np.zeros((4, 4, 3), np.uint8))
    write_png(masks / "orphan_mask.png", ok)
    write_png(masks / "rgb.png", np.stack([ok] * 3, axis=-1))
    write_png(root / "images" / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    write_png(masks / "dup.png", ok)
    write_png(masks / "dup.tif", ok)
    write_png(root / "images" / "dup.png", np.zeros((4, 4, 3), np.uint8))
    return masks


def audit_stats(plan, workers: int = 1) -> dict:
    """mask_stats.json's content for a seg.audit.AuditPlan, without writing anything."""
    from seg import audit

    return audit.build_stats(audit.tally_masks(plan.items, plan.settings, workers, progress=False), plan)


def stats_channel(stats: dict, name: str) -> dict:
    """The entry of channel ``name`` in mask_stats.json's content."""
    return next(c for c in stats["channels"] if c["name"] == name)


# ------------------------------------------------------------------ weighting strategies (test_weighting_*.py)


@pytest.fixture
def logits_batch():
    """Logits [2,3,5,4], targets with about 30% positives, about 20% of the pixels ignored (seeded)."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=g) * 2
    y = (torch.rand(2, 3, 5, 4, generator=g) > 0.7).float()
    valid = torch.rand(2, 1, 5, 4, generator=g) > 0.2
    return x, y, valid


@pytest.fixture
def covered_batch():
    """Logits [2,3,5,4], about 40% positives, about 25% ignored, and pixel (0, 0) a valid positive of every
    channel in every image (no channel empty, in the batch or in an image)."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=g) * 2
    y = (torch.rand(2, 3, 5, 4, generator=g) > 0.6).float()
    y[:, :, 0, 0] = 1.0
    valid = torch.rand(2, 1, 5, 4, generator=g) > 0.25
    valid[:, :, 0, 0] = True
    return x, y, valid


CLAMP = (0.001, 1000.0)


def loss_config(weighting="none", negatives="pixels", ema=None, instances_from="instance", apply_as="pos_weight"):
    """A validated loss section: ``weighting`` with the clamp CLAMP, no normalize, no stats file."""
    from seg.config.schema import LossConfig

    return LossConfig.model_validate(
        {
            "weighting": weighting,
            "apply_as": apply_as,
            "negatives": negatives,
            "clamp": CLAMP,
            "normalize": False,
            "stats_file": None,
            "ema": ema,
            "border": {"instances_from": instances_from, "connectivity": 4, "w0": 10.0, "sigma": 5.0},
        }
    )


def counts(positive, valid, all_zero):
    """Training-split counts (a seg.data.counts.MaskCounts) from positives per channel and two totals."""
    from seg.data.counts import MaskCounts

    positive = np.asarray(positive, dtype=np.int64)
    return MaskCounts(len(positive), positive_pixels=positive, valid_pixels=valid, all_zero_pixels=all_zero)


def build(name, mask_counts, fmt="multilabel", **loss):
    """The strategy ``name`` built from ``mask_counts`` for ``fmt`` masks (channels c0, c1, ...)."""
    from seg.config import MaskSpec
    from seg.weighting.registry import build_strategy

    spec = MaskSpec(fmt, tuple(f"c{i}" for i in range(mask_counts.num_channels)))
    return build_strategy(loss_config(name, **loss), mask_counts, spec)


def masks():
    """2 images, 2 channels, 2x2 pixels; one pixel of image 1 ignored (as in test_weighting_formulas).

    Positives (valid): channel 0: 3, channel 1: 1; valid pixels 7; all-zero valid pixels 4.
    """
    import torch

    target = torch.zeros(2, 2, 2, 2)
    target[0, 0, 0, 0] = target[0, 0, 0, 1] = target[1, 0, 0, 0] = 1
    target[0, 1, 0, 1] = target[1, 1, 1, 1] = 1
    valid = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    valid[1, 0, 1, 1] = False
    return {"target": target, "valid": valid}


DATASET = counts([3, 1], valid=7, all_zero=4)  # the counts of masks()


def binary_batch(positives: int) -> dict:
    """One 2x2 binary image with ``positives`` positive pixels."""
    import torch

    target = torch.zeros(1, 1, 2, 2)
    target.view(-1)[:positives] = 1
    return {"target": target, "valid": torch.ones(1, 1, 2, 2, dtype=torch.bool)}


def interrupt_after_epoch(monkeypatch, epoch: int) -> None:
    """Stop the process right after ``epoch``'s last.pt is written (Ctrl-C, or a kill)."""
    from seg import checkpoint

    original = checkpoint.save_atomic

    def save(state, path):
        original(state, path)
        if path.name == "last.pt" and state["state"]["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_atomic", save)
