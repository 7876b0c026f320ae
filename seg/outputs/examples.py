"""Example predictions for people to look at: image, ground truth, prediction."""

from __future__ import annotations

import numpy as np
import torch

from seg.data.dataset import SegmentationDataset, pad_collate
from seg.data.formats import read_image


@torch.no_grad()
def overlay_examples(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    count: int,
    options,
    logit_threshold: torch.Tensor | float = 0.0,
) -> tuple[list, list, list]:
    """The first ``count`` items: images uint8 [H,W,3], truths and predictions uint8 [H,W,C] in {0,1}."""
    from seg.engine import autocast, to_device

    model.eval()
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    if not items:
        return [], [], []
    batch = to_device(pad_collate(items), options)
    with autocast(options):
        logits = model(batch["image"]).float()
    threshold = logit_threshold.to(logits.device) if isinstance(logit_threshold, torch.Tensor) else logit_threshold
    preds = (logits > threshold).cpu().numpy().astype(np.uint8)
    images, truths, predictions = [], [], []
    for row, item in enumerate(items):
        image = read_image(dataset.samples[item["index"]].image)
        h, w = image.shape[:2]
        images.append(image)
        truths.append(item["target"].numpy().transpose(1, 2, 0)[:h, :w].astype(np.uint8))
        predictions.append(preds[row].transpose(1, 2, 0)[:h, :w])
    return images, truths, predictions
