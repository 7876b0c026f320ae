"""Model factory: segmentation_models_pytorch architectures by name."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch

from seg.config import ConfigError


def build_model(
    arch: str, encoder: str, encoder_weights: str | None, classes: int, in_channels: int = 3
) -> torch.nn.Module:
    """An smp model emitting raw logits [B, classes, H, W] (no activation)."""
    known = {name.lower(): name for name in smp.__dict__ if isinstance(getattr(smp, name), type)}
    if arch.lower() not in known:
        raise ConfigError(f"model.arch: unknown architecture {arch!r} (e.g. Unet, UnetPlusPlus, FPN, DeepLabV3Plus)")
    if encoder not in smp.encoders.get_encoder_names():
        raise ConfigError(f"model.encoder: unknown encoder {encoder!r} (e.g. resnet18, resnet34, efficientnet-b0)")
    try:
        return smp.create_model(
            arch, encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels, classes=classes
        )
    except Exception as err:
        if encoder_weights is None:
            raise
        raise ConfigError(
            f"model.encoder_weights: cannot load {encoder_weights!r} weights for {encoder} "
            f"({type(err).__name__}); they must be downloaded, and this machine is offline. "
            "Set model.encoder_weights: null to train from scratch"
        ) from None
