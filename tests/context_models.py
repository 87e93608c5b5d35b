"""Context-dependent test models: a colour rule plus fixed random dilated convolutions that see 63 px around a pixel.

:class:`tests.conftest.RedRoofNet` sees one pixel at a time, so where windows fall, what they contain and how
chunks are resampled cannot change its output. These models depend on their context (and on the zero padding at a
window's edge) as a real network does: they show whether chunking changes a pixel. Registered as
``context-test`` (semantic) and ``context-instance-test`` (instance head); ``tests/dask_preload.py`` imports this
module so that Dask workers know them too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from bldgseg.models import register_architecture
from bldgseg.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import ROOF_SHADES, save_test_model

SEED = 14
DILATIONS = (1, 2, 4, 8, 16)  # receptive field 1 + 2 * sum = 63 px
WIDTH = 4
#: Colour logit = COLOUR_GAIN * (R - G) on ImageNet-normalised input (RedRoofNet's 4 would drown the context).
COLOUR_GAIN = 1.0
#: Norm of the context term's last layer: its logit has a spread of about 0.7 on the test scenes, enough
#: to move outlines by pixels and to drop or add small pieces.
CONTEXT_GAIN = 2.0


class ContextNet(nn.Module):
    """A red-minus-green colour logit plus a fixed random context term (zero-padded dilated 3x3 convolutions)."""

    def __init__(
        self, encoder_name: str = "none", encoder_weights=None, in_channels: int = 3, classes: int = 1
    ):
        super().__init__()
        self.colour = nn.Conv2d(in_channels, classes, 1)
        layers: list[nn.Module] = []
        channels = in_channels
        for dilation in DILATIONS:
            layers += [nn.Conv2d(channels, WIDTH, 3, padding=dilation, dilation=dilation), nn.Tanh()]
            channels = WIDTH
        layers.append(nn.Conv2d(WIDTH, classes, 1))
        self.context = nn.Sequential(*layers)
        generator = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            self.colour.weight.zero_()
            self.colour.weight[0, 0, 0, 0] = COLOUR_GAIN
            self.colour.weight[0, 1, 0, 0] = -COLOUR_GAIN
            self.colour.bias.zero_()
            for conv in self.context:
                if isinstance(conv, nn.Conv2d):
                    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 1.5 / fan_in**0.5)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
            last = self.context[-1]
            last.weight.mul_(CONTEXT_GAIN / last.weight.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.colour(x) + self.context(x)


class ContextInstanceNet(ContextNet):
    """ContextNet's building logit plus the instance maps of what the window shows: each building is a
    connected region of one roof shade (:data:`tests.conftest.ROOF_SHADES`) inside the logit's mask, its centre
    heatmap and offsets those of :func:`bldgseg.instance_targets.instance_target_stack` for the window, so a building
    cut by the window's edge gets the centre of its visible part (as a real instance head does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from skimage.measure import label

        from bldgseg.instance_targets import instance_target_stack

        logit = super().forward(x)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        rgb = ((x * std + mean) * 255).cpu().numpy()
        shades = np.asarray(ROOF_SHADES, np.float32)[:, :, None, None, None]  # (S, 3, 1, 1, 1)
        shade = np.argmin(((rgb.transpose(1, 0, 2, 3)[None] - shades) ** 2).sum(1), axis=0)  # (N, H, W)
        maps = []
        for key, roof in zip(shade, (logit[:, 0] > 0).cpu().numpy(), strict=True):
            ids = label(np.where(roof, key + 1, 0), background=0, connectivity=1)
            maps.append(instance_target_stack(roof.astype(np.uint8), ids)[1:4])
        return torch.cat([logit, torch.from_numpy(np.stack(maps)).to(x.device)], dim=1)


register_architecture("context-test", ContextNet)
register_architecture("context-instance-test", ContextInstanceNet)


def context_model(folder: Path) -> Path:
    """A checkpoint of :class:`ContextNet` at 0.3 m: 64-px windows, 16 px overlap."""
    return save_test_model(ContextNet(), folder, "context-test", tile_size=64, overlap=16)


def context_instance_model(folder: Path) -> Path:
    """A checkpoint of :class:`ContextInstanceNet` at 0.3 m: 96-px windows, 48 px overlap."""
    return save_test_model(
        ContextInstanceNet(), folder, "context-instance-test", tile_size=96, overlap=48, head="instance"
    )
