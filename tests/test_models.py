"""Tests for seg/models.py: build_model gives raw logits with the channels asked; unknown names and
pretrained weights on an offline machine are one-line config errors."""

import pytest
import torch

from seg.errors import ConfigError
from seg.models import build_model


def test_build_model_gives_raw_logits_with_the_channels_asked():
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", None, classes=3, in_channels=1).eval()  # the name in any case
    assert type(model).__name__ == "Unet"
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 3, 32, 32)
    assert out.min() < 0 < out.max()  # no sigmoid: logits of both signs
    assert build_model("FPN", "resnet18", None, classes=2).segmentation_head[0].out_channels == 2


def test_unknown_architecture_and_encoder_name_the_key():
    with pytest.raises(ConfigError, match=r"^model.arch: unknown architecture 'UNetX' \(e.g. Unet"):
        build_model("UNetX", "resnet18", None, 1)
    with pytest.raises(ConfigError, match=r"^model.encoder: unknown encoder 'resnet19' \(e.g. resnet18"):
        build_model("Unet", "resnet19", None, 1)


def test_pretrained_weights_offline_fail_with_a_clear_message():
    # conftest sets HF_HUB_OFFLINE=1 before huggingface_hub is imported (it reads it once, at import)
    with pytest.raises(ConfigError) as err:
        build_model("Unet", "resnet18", "imagenet", 1)
    message = str(err.value)
    assert message.startswith("model.encoder_weights: cannot load 'imagenet' weights for resnet18 (")
    assert "this machine is offline" in message and message.endswith(
        "Set model.encoder_weights: null to train from scratch"
    )
