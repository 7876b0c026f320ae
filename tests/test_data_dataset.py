"""seg/data/dataset.py: augmentation keeps image, mask, valid and weight map aligned; padding is ignored."""

import numpy as np
import torch
from conftest import write_png

from seg.config.specs import MaskSpec
from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.folders import find_samples
from seg.data.transforms import eval_transform, train_transform


def aligned_dataset(root, size=50):
    """The image's red channel equals the mask (0/255), so alignment can be read back."""
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = (rng.random((size, size + 7)) > 0.6).astype(np.uint8) * 255
        image = np.stack([mask, np.full_like(mask, 100), np.full_like(mask, 50)], axis=-1)
        write_png(root / "images" / f"a{i}.png", image)
        write_png(root / "masks" / f"a{i}.png", mask)
    return find_samples(root, MaskSpec("binary", ("x",), positive_values=(255,)))


def red_channel_as_mask(image):
    # undo A.Normalize for the red channel: x = (v/255 - 0.485) / 0.229
    red = (image[0] * 0.229 + 0.485) * 255
    return (red > 127).float()


def test_train_augmentation_moves_image_mask_and_weight_map_together(tmp_path):
    samples = aligned_dataset(tmp_path)
    spec = MaskSpec("binary", ("x",), positive_values=(255,))
    # the weight map is 1 + 2*mask, so it must stay equal to 1 + 2*target after augmentation
    dataset = SegmentationDataset(
        samples,
        spec,
        train_transform(32),
        length=12,
        seed=3,
        sample_map=lambda s, target, valid: 1.0 + 2.0 * target[..., 0],
    )
    for index in range(12):
        item = dataset[index]
        assert item["image"].shape == (3, 32, 32) and item["target"].shape == (1, 32, 32)
        torch.testing.assert_close(red_channel_as_mask(item["image"]), item["target"][0])
        torch.testing.assert_close(item["weight_map"][0], 1.0 + 2.0 * item["target"][0])
        assert item["valid"].all()


def test_augmentation_is_deterministic_per_epoch_and_index(tmp_path):
    samples = aligned_dataset(tmp_path)
    spec = MaskSpec("binary", ("x",), positive_values=(255,))
    a = SegmentationDataset(samples, spec, train_transform(32), seed=1)
    b = SegmentationDataset(samples, spec, train_transform(32), seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    torch.testing.assert_close(a[1]["image"], b[1]["image"])
    b.set_epoch(3)
    assert not torch.equal(a[1]["image"], b[1]["image"]) or not torch.equal(a[2]["image"], b[2]["image"])


def test_eval_pads_to_multiple_of_32_and_marks_padding_ignored(tmp_path):
    samples = aligned_dataset(tmp_path, size=50)  # 50 x 57
    spec = MaskSpec("binary", ("x",), positive_values=(255,))
    item = SegmentationDataset(samples, spec, eval_transform())[0]
    assert item["image"].shape == (3, 64, 64)
    assert item["valid"][0, :50, :57].all() and not item["valid"][0, 50:].any() and not item["valid"][0, :, 57:].any()
    torch.testing.assert_close(red_channel_as_mask(item["image"])[:50, :57], item["target"][0, :50, :57])


def test_pad_collate_pads_smaller_items_as_ignored():
    small = {
        "image": torch.ones(3, 2, 2),
        "target": torch.ones(1, 2, 2),
        "valid": torch.ones(1, 2, 2, dtype=torch.bool),
        "index": 0,
    }
    large = {
        "image": torch.ones(3, 3, 4),
        "target": torch.ones(1, 3, 4),
        "valid": torch.ones(1, 3, 4, dtype=torch.bool),
        "index": 1,
    }
    batch = pad_collate([small, large])
    assert batch["image"].shape == (2, 3, 3, 4)
    assert batch["valid"][0].sum() == 4 and batch["valid"][1].sum() == 12
    assert batch["index"].tolist() == [0, 1]


def test_keep_decoded_gives_the_same_items_and_reads_each_file_once(tmp_path, monkeypatch):
    """Decoded once at construction: every item of two epochs (foreground crops, weight map, eval padding) is the
    one a dataset decoding per item gives, and no file is read again after construction."""
    from seg.data import dataset as dataset_module
    from seg.data.sampling import ForegroundSampler

    samples = aligned_dataset(tmp_path, size=70)
    spec = MaskSpec("binary", ("x",), positive_values=(255,))
    reads = []
    real_read = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path: reads.append(path) or real_read(path))

    def build(keep, transform):
        return SegmentationDataset(
            samples,
            spec,
            transform,
            length=7,
            seed=5,
            sample_map=lambda s, target, valid: 1.0 + 2.0 * target[..., 0],
            foreground=ForegroundSampler(0.5, 32),
            keep_decoded=keep,
        )

    for transform in (train_transform(32), eval_transform()):
        per_item, kept = build(False, transform), build(True, transform)
        reads.clear()
        for epoch in (0, 1):
            per_item.set_epoch(epoch)
            kept.set_epoch(epoch)
            for index in range(7):
                a, b = per_item[index], kept[index]
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if k != "index")
        assert len(reads) == 14  # the per-item dataset's reads only
