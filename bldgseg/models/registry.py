"""Registry of segmentation architectures (lower-case name -> constructor)."""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch.nn as nn

from bldgseg.errors import ModelError

#: The segmentation_models_pytorch architectures (also the decoders of the panoptic instance models).
SMP_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet": smp.Unet,
    "unetplusplus": smp.UnetPlusPlus,
    "fpn": smp.FPN,
    "pspnet": smp.PSPNet,
    "deeplabv3": smp.DeepLabV3,
    "deeplabv3plus": smp.DeepLabV3Plus,
}
#: Every registered architecture: the smp ones and those added with :func:`register_architecture`.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = dict(SMP_ARCHITECTURES)

DEFAULT_ENCODER = "tu-efficientnet_lite0"


def register_architecture(name: str, constructor: Callable[..., nn.Module]) -> None:
    """Add an architecture; ``constructor(encoder_name=, encoder_weights=, in_channels=, classes=)``."""
    ARCHITECTURES[name.lower()] = constructor


def list_architectures() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(ARCHITECTURES)


def build_model(
    architecture: str,
    encoder: str = DEFAULT_ENCODER,
    num_classes: int = 1,
    in_channels: int = 3,
) -> nn.Module:
    """Build an untrained model; encoder weights are loaded separately (see ``pretrained``)."""
    key = architecture.lower()
    if key not in ARCHITECTURES:
        valid = ", ".join(list_architectures())
        raise ModelError(f"unknown architecture {architecture!r}; choose one of: {valid}")
    try:
        return ARCHITECTURES[key](
            encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes
        )
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot build {architecture!r} with encoder {encoder!r}: {exc}") from exc
