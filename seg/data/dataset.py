"""A torch Dataset over (image, mask) samples, and the collate that pads batches.

Each item is a dict of tensors:

- ``image``  float32 [3,H,W] (normalised), ``target`` float32 [C,H,W] in {0,1},
- ``valid``  bool [1,H,W] (False = ignore: ``ignore_index`` or padding),
- ``weight_map`` float32 [1,H,W] when a per-sample map is configured,
- ``index`` int, the sample's position (its stem is ``dataset.samples[index].stem``).
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import numpy as np
import torch
from PIL import Image

from seg.config.specs import MaskSpec
from seg.data.folders import Sample
from seg.data.formats import load_mask
from seg.data.reading import read_image
from seg.data.sampling import CropPlan, ForegroundSampler, positive_locations
from seg.errors import DataError

SampleMap = Callable[[Sample, np.ndarray, np.ndarray], np.ndarray]
Decoded = tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]  # image, target, valid, augmented extras


def check_image_sizes(samples: list[Sample], spec: MaskSpec) -> None:
    """Refuse an image whose size differs from its mask's (header reads only: fast)."""
    for sample in samples:
        sizes = {}
        for path in (sample.image, *sample.masks) + ((sample.instances,) if sample.instances else ()):
            try:
                with Image.open(path) as handle:
                    sizes[path] = handle.size
            except (OSError, ValueError):
                raise DataError(f"{path}: cannot read the file (missing, corrupt or not an image)") from None
        (first, size), *rest = sizes.items()
        for path, other in rest:
            if other != size:
                raise DataError(
                    f"{path}: size {other[0]}x{other[1]} differs from its image {first.name} "
                    f"({size[0]}x{size[1]}); masks must match their images pixel for pixel"
                )


class SegmentationDataset(torch.utils.data.Dataset):
    """Reads, decodes and augments samples.

    length: items per epoch (default one per sample; more gives several random crops
    of each image per epoch). seed: augmentation seed; item i of epoch e always gets
    the same augmentation (resumable, independent of worker count).
    sample_map: optional function (sample, target, valid) -> float32 [H,W] map,
    computed before augmentation (e.g. the border weight map) and augmented with the mask.
    foreground: optional :class:`ForegroundSampler`; its forced crops are cut before the transform
    (whose random crop of the same side then keeps them whole).
    keep_decoded: decode every sample once, here, and keep the arrays (image, target, valid and the
    sample map, and with ``foreground`` each image's positive locations) in memory: worker processes forked
    later share them, so each image is decoded once per training process instead of once per item (and
    the locations are not searched again in each epoch's new workers). Costs the decoded size in memory
    (CamVid's 367 training images with 12 channels: about 1 GB).
    """

    def __init__(
        self,
        samples: list[Sample],
        spec: MaskSpec,
        transform: A.Compose,
        length: int | None = None,
        seed: int = 0,
        sample_map: SampleMap | None = None,
        foreground: ForegroundSampler | None = None,
        keep_decoded: bool = False,
    ) -> None:
        self.samples, self.spec, self.transform = samples, spec, transform
        self.length = length or len(samples)
        self.seed, self.epoch = seed, 0
        self.sample_map = sample_map
        self.foreground = foreground
        self._locations: dict[int, list[np.ndarray]] = {}  # per image: positive locations per channel
        self._decoded: list[Decoded] | None = None
        if keep_decoded:
            self._decoded = [self.decode(sample) for sample in samples]
            if foreground is not None:  # found once too, and shared with the workers like the arrays
                for i, (_, target, valid, _) in enumerate(self._decoded):
                    self._locations[i] = positive_locations(target, valid, i)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def crop_plan(self, index: int, target: np.ndarray, valid: np.ndarray) -> CropPlan:
        """Where item ``index``'s crop goes this epoch, for its decoded ``target`` [H,W,C] and ``valid``."""
        if self.foreground is None:
            return CropPlan(forced=False)
        image_index = index % len(self.samples)
        if image_index not in self._locations:
            self._locations[image_index] = positive_locations(target, valid, image_index)
        return self.foreground.plan(self._locations[image_index], target.shape[:2], self.seed, self.epoch, index)

    def decode(self, sample: Sample) -> Decoded:
        """The sample's image, target [H,W,C], valid [H,W] (bool), and the per-pixel extras the transform
        augments with the mask (valid as uint8, and the sample map if any)."""
        image = read_image(sample.image)
        target, valid = load_mask(sample.masks, self.spec)
        if image.shape[:2] != target.shape[:2]:
            raise DataError(
                f"{sample.masks[0]}: mask size {target.shape[1]}x{target.shape[0]} differs from "
                f"image {sample.image.name} ({image.shape[1]}x{image.shape[0]})"
            )
        extra = {"valid": valid.astype(np.uint8)}
        if self.sample_map is not None:
            extra["weight_map"] = self.sample_map(sample, target, valid).astype(np.float32)
        return image, target, valid, extra

    def __getitem__(self, index: int) -> dict:
        image_index = index % len(self.samples)
        if self._decoded is not None:
            image, target, valid, extra = self._decoded[image_index]
        else:
            image, target, valid, extra = self.decode(self.samples[image_index])
        plan = self.crop_plan(index, target, valid)
        if plan.top is not None and plan.left is not None and self.foreground is not None:
            rows = slice(plan.top, plan.top + self.foreground.crop)
            cols = slice(plan.left, plan.left + self.foreground.crop)
            image, target = image[rows, cols], target[rows, cols]
            extra = {key: value[rows, cols] for key, value in extra.items()}
        self.transform.set_random_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
        out = self.transform(image=image, mask=target, **extra)
        item = {
            "image": torch.from_numpy(out["image"].transpose(2, 0, 1).copy()),
            "target": torch.from_numpy(out["mask"].transpose(2, 0, 1).astype(np.float32)),
            "valid": torch.from_numpy(out["valid"][None].astype(bool)),
            "index": image_index,
        }
        if "weight_map" in out:
            item["weight_map"] = torch.from_numpy(np.ascontiguousarray(out["weight_map"][None]))
        return item


def pad_collate(items: list[dict]) -> dict:
    """Stack items, padding bottom/right to the largest in the batch (padding is ignored)."""
    height = max(item["image"].shape[1] for item in items)
    width = max(item["image"].shape[2] for item in items)
    batch: dict = {}
    for key in items[0]:
        if key == "index":
            batch[key] = torch.tensor([item[key] for item in items])
            continue
        parts = []
        for item in items:
            tensor = item[key]
            pad = (0, width - tensor.shape[2], 0, height - tensor.shape[1])
            parts.append(torch.nn.functional.pad(tensor, pad) if any(pad) else tensor)
        batch[key] = torch.stack(parts)
    return batch
