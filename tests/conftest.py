"""Shared fixtures: GeoTIFFs with exact known content, and a colour-rule model with exactly known output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn as nn
from rasterio.transform import from_origin

from bldgseg.models import ModelCard, register_architecture, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
RED = (220, 30, 30)
GREEN = (40, 140, 50)


class RedRoofNet(nn.Module):
    """Segments red pixels exactly: logit = 4 * (R - G) on ImageNet-normalised input.

    A real torch module saved and loaded as a checkpoint, so the pipeline's tiling, blending, resampling and
    seam rules can be checked against geometry known to the pixel.
    """

    def __init__(
        self, encoder_name: str = "none", encoder_weights=None, in_channels: int = 3, classes: int = 1
    ):
        super().__init__()
        self.head = nn.Conv2d(in_channels, classes, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0, 0, 0, 0] = 4.0
            self.head.weight[0, 1, 0, 0] = -4.0
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


register_architecture("red-roof-test", RedRoofNet)


@pytest.fixture
def red_roof_model(tmp_path: Path) -> Path:
    """A checkpoint (weights + card) of :class:`RedRoofNet` at 0.3 m, 64-pixel tiles, 16 overlap."""
    card = ModelCard(
        name="red-roof-test",
        architecture="red-roof-test",
        encoder="none",
        tile_size=64,
        overlap=16,
        gsd_m=0.3,
        threshold=0.5,
    )
    return save_checkpoint(RedRoofNet(), card, tmp_path / "models" / "red-roof.safetensors")


def write_rgb(
    path: Path, rgb: np.ndarray, crs: str = "EPSG:32636", transform=None, nodata=None, mask=None
) -> Path:
    """Write a (3, H, W) uint8 GeoTIFF; ``mask`` (bool H x W, True = valid) becomes an internal mask."""
    transform = transform or from_origin(500000.0, 100000.0, 0.3, 0.3)
    profile = dict(
        driver="GTiff",
        width=rgb.shape[2],
        height=rgb.shape[1],
        count=3,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=64,
        blockysize=64,
    )
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds:
        ds.write(rgb)
        if mask is not None:
            ds.write_mask(mask.astype(np.uint8) * 255)
    return path


def scene(height: int, width: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Green ground with red rectangular roofs at (row0, col0, row1, col1), end-exclusive."""
    rgb = np.empty((3, height, width), np.uint8)
    rgb[:] = np.array(GREEN, np.uint8)[:, None, None]
    for r0, c0, r1, c1 in boxes:
        rgb[:, r0:r1, c0:c1] = np.array(RED, np.uint8)[:, None, None]
    return rgb
