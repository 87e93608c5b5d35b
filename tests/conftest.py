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
from bldgseg.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
RED = (220, 30, 30)
GREEN = (40, 140, 50)
#: Roof colours :class:`RoofInstanceNet` tells apart (touching roofs of different shades are different buildings).
ROOF_SHADES = [RED, (170, 40, 40), (250, 70, 60), (200, 10, 90)]


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


class RoofInstanceNet(RedRoofNet):
    """RedRoofNet's building logit plus exact instance maps: each roof is a region of one shade.

    Every roof pixel takes the nearest of :data:`ROOF_SHADES` (resampled edge pixels mix colours); the centre
    heatmap and offsets are :func:`bldgseg.instance_targets.instance_target_stack` of the window's connected
    same-shade regions, i.e. what a perfectly trained instance head would predict for that window, including
    for buildings cut by the window's edge.
    """

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


register_architecture("roof-instance-test", RoofInstanceNet)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests skip, saying why, on a machine without CUDA (``pytest -m gpu`` selects them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA device; torch.cuda.is_available() is False on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def save_test_model(model: nn.Module, folder: Path, name: str, **card: object) -> Path:
    """A checkpoint (weights + card) of a test model registered as ``name``, at 0.3 m with threshold 0.5."""
    full = ModelCard(name=name, architecture=name, encoder="none", gsd_m=0.3, threshold=0.5, **card)
    return save_checkpoint(model, full, folder / "models" / f"{name}.safetensors")


@pytest.fixture
def red_roof_model(tmp_path: Path) -> Path:
    """A checkpoint of :class:`RedRoofNet` at 0.3 m, 64-pixel tiles, 16 overlap."""
    return save_test_model(RedRoofNet(), tmp_path, "red-roof-test", tile_size=64, overlap=16)


@pytest.fixture
def roof_instance_model(tmp_path: Path) -> Path:
    """A checkpoint of :class:`RoofInstanceNet` (instance head) at 0.3 m, 96-pixel tiles, 64 overlap."""
    return save_test_model(
        RoofInstanceNet(), tmp_path, "roof-instance-test", tile_size=96, overlap=64, head="instance"
    )


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


def scene(
    height: int,
    width: int,
    boxes: list[tuple[int, int, int, int]],
    colours: list[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Green ground with rectangular roofs at (row0, col0, row1, col1), end-exclusive; red unless ``colours``."""
    rgb = np.empty((3, height, width), np.uint8)
    rgb[:] = np.array(GREEN, np.uint8)[:, None, None]
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        colour = colours[i] if colours else RED
        rgb[:, r0:r1, c0:c1] = np.array(colour, np.uint8)[:, None, None]
    return rgb
