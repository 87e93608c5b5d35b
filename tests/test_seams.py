"""Chunking never changes a pixel: the same buildings whatever ``--chunk-size``, input GSD or executor.

The models here depend on context (:mod:`tests.context_models`, and the bundled ``aerial-buildings``), so a
chunk that saw other windows, other padding or another resampling than a single-chunk run would give other
outlines. Buildings are compared as in the README's promise: same count, symmetric difference of the union below
0.1 % of the building area.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from rasterio.transform import from_origin
from scipy import ndimage

from bldgseg.pipeline import RunConfig, run
from tests.conftest import REPO, ROOF_SHADES, SAMPLE, scene, write_rgb
from tests.context_models import context_instance_model, context_model

PRELOAD = str(REPO / "tests" / "dask_preload.py")
KAMPALA = SAMPLE / "images" / "kampala_mosaic_z20.tif"
SINGLE_CHUNK = 8192
#: The README's promise: outlines within 0.1 % of the building area.
MAX_SYMMETRIC_DIFFERENCE = 1e-3


def textured_roofs(size: int, gsd: float, seed: int, touching: bool = False) -> np.ndarray:
    """A ``size`` px square scene at ``gsd``: roofs of 3-11 m in the four roof shades on green ground, one per
    16 m cell at most (so every building fits the 12 m halo), edges blurred (so the model's context moves the
    outlines) and pixel noise added; the same ground for any GSD. ``touching``: each roof is two houses of
    different shades wall to wall (for instance models)."""
    rng = np.random.default_rng(seed)
    cell = round(16 / gsd)
    boxes = []
    for row in range(0, size - cell + 1, cell):
        for col in range(0, size - cell + 1, cell):
            if rng.random() < 0.15:
                continue
            h, w = (rng.uniform(3, 11, 2) / gsd).astype(int)
            r = row + int(rng.integers(round(2 / gsd), cell - h - round(2 / gsd) + 1))
            c = col + int(rng.integers(round(2 / gsd), cell - w - round(2 / gsd) + 1))
            if touching and w > round(6 / gsd):
                split = c + int(rng.integers(round(3 / gsd), w - round(3 / gsd) + 1))
                boxes += [(r, c, r + h, split), (r, split, r + h, c + w)]
            else:
                boxes.append((r, c, r + h, c + w))
    colours = [ROOF_SHADES[i % len(ROOF_SHADES)] for i in range(len(boxes))]
    rgb = scene(size, size, boxes, colours).astype(np.float32)
    rgb = ndimage.gaussian_filter(rgb, sigma=(0, 0.3 / gsd, 0.3 / gsd))
    rgb += rng.normal(0, 4, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def raster(folder: Path, size: int, gsd: float, seed: int = 0, touching: bool = False) -> Path:
    rgb = textured_roofs(size, gsd, seed, touching)
    return write_rgb(folder / f"roofs_{gsd}.tif", rgb, transform=from_origin(500000.0, 100000.0, gsd, gsd))


def buildings(tmp_path: Path, model: Path | str, image: Path, chunk_size: int, **kw) -> gpd.GeoDataFrame:
    name = f"{Path(str(model)).stem}_{image.stem}_{chunk_size}_{kw.get('workers', 0)}.gpkg"
    kw.setdefault("max_building_size_m", 12.0)
    kw.setdefault("min_area_m2", 1.0)
    config = RunConfig(
        inputs=[image],
        output=tmp_path / name,
        model=str(model),
        device="cpu",
        chunk_size=chunk_size,
        texture=False,
        **kw,
    )
    result = run(config)
    assert result.metadata["units_failed"] == 0
    return result.buildings


def assert_same_buildings(single: gpd.GeoDataFrame, other: gpd.GeoDataFrame, what: str) -> None:
    """Same count, symmetric difference of the unions below 0.1 % of the single-chunk building area."""
    assert len(single) > 0
    area = shapely.union_all(single.geometry.values)
    difference = area.symmetric_difference(shapely.union_all(other.geometry.values)).area / area.area
    assert len(other) == len(single) and difference < MAX_SYMMETRIC_DIFFERENCE, (
        f"{what}: {len(other)} buildings vs {len(single)} in one chunk, outlines differ by "
        f"{difference:.3%} of the building area"
    )


# ---------------------------------------------------------------------------------------------- semantic


# (input GSD, raster size in px, chunk sizes): chunks smaller than one model window (64 px for the semantic
# model, 96 for the instance model) at the model's 0.3 m GSD, chunks of a few windows, and inputs finer
# (0.15 m) and coarser (0.5 m) than the model's
@pytest.mark.parametrize(
    ("gsd", "size", "chunk_sizes"),
    [(0.3, 192, (48, 100)), (0.15, 384, (96,)), (0.5, 116, (36,))],
)
def test_context_model_gives_the_same_buildings_for_every_chunk_size(tmp_path, gsd, size, chunk_sizes):
    model = context_model(tmp_path)
    image = raster(tmp_path, size, gsd)
    single = buildings(tmp_path, model, image, SINGLE_CHUNK)
    assert len(single) >= 6
    for chunk_size in chunk_sizes:
        chunked = buildings(tmp_path, model, image, chunk_size)
        assert_same_buildings(single, chunked, f"{gsd} m input, --chunk-size {chunk_size}")


def test_touching_buildings_split_at_probability_dips_are_the_same_for_every_chunk_size(tmp_path):
    """``split_core``: the watershed labels of a building depend only on its connected part of the mask."""
    model = context_model(tmp_path)
    image = raster(tmp_path, 192, 0.3, seed=1, touching=True)
    single = buildings(tmp_path, model, image, SINGLE_CHUNK, split_core=0.9)
    assert len(single) >= 6
    for chunk_size in (48, 100):
        chunked = buildings(tmp_path, model, image, chunk_size, split_core=0.9)
        assert_same_buildings(single, chunked, f"split at cores >= 0.9, --chunk-size {chunk_size}")


@pytest.mark.parametrize(("gsd", "size", "chunk_sizes"), [(0.3, 192, (64,)), (0.15, 384, (128,))])
def test_context_instance_model_gives_the_same_buildings_for_every_chunk_size(tmp_path, gsd, size, chunk_sizes):
    model = context_instance_model(tmp_path)
    image = raster(tmp_path, size, gsd, seed=1, touching=True)
    single = buildings(tmp_path, model, image, SINGLE_CHUNK)
    assert len(single) >= 6
    for chunk_size in chunk_sizes:
        chunked = buildings(tmp_path, model, image, chunk_size)
        assert_same_buildings(single, chunked, f"instances, {gsd} m input, --chunk-size {chunk_size}")


def test_a_mosaic_of_coarse_tiles_gives_the_buildings_of_one_geotiff(tmp_path):
    """0.5 m tiles (enlarged for the 0.3 m model) read as one mosaic (a VRT), in one chunk and in chunks smaller
    than a window, give the buildings of one GeoTIFF of the area: the model grid is read from source pixels, so
    GDAL's per-tile resampling at the tile seams plays no part."""
    model = context_model(tmp_path)
    gsd, size, tile = 0.5, 116, 58
    rgb = textured_roofs(size, gsd, seed=2)
    whole = write_rgb(tmp_path / "whole.tif", rgb, transform=from_origin(500000.0, 100000.0, gsd, gsd))
    folder = tmp_path / "tiles"
    folder.mkdir()
    for r in range(0, size, tile):
        for c in range(0, size, tile):
            transform = from_origin(500000.0 + c * gsd, 100000.0 - r * gsd, gsd, gsd)
            write_rgb(folder / f"t{r}_{c}.tif", rgb[:, r : r + tile, c : c + tile], transform=transform)
    single = buildings(tmp_path, model, whole, SINGLE_CHUNK)
    for chunk_size in (SINGLE_CHUNK, 36):
        mosaic = buildings(tmp_path, model, folder, chunk_size)
        assert_same_buildings(single, mosaic, f"mosaic of 0.5 m tiles, --chunk-size {chunk_size}")


def test_bundled_model_gives_the_same_buildings_on_the_sample_mosaic(tmp_path):
    """The README's promise with the real model: the 0.15 m Kampala mosaic (seen at 0.3 m) in chunks of 512
    (each smaller than one 512-px model window at 0.3 m) and 1024 px gives the buildings of one chunk."""
    single = buildings(tmp_path, "aerial-buildings", KAMPALA, SINGLE_CHUNK, max_building_size_m=60.0)
    assert len(single) > 50
    for chunk_size in (512, 1024):
        chunked = buildings(tmp_path, "aerial-buildings", KAMPALA, chunk_size, max_building_size_m=60.0)
        assert_same_buildings(single, chunked, f"aerial-buildings, --chunk-size {chunk_size}")


# ---------------------------------------------------------------------------------------------- executors


@pytest.mark.distributed
def test_two_worker_processes_give_the_buildings_of_a_single_chunk(tmp_path):
    """``--workers 2`` (a LocalCluster of two processes, one PyTorch thread each) in small chunks matches one
    local chunk: the context instance model on 0.15 m input, and the bundled model on the sample mosaic."""
    cases = [
        (context_instance_model(tmp_path), raster(tmp_path, 384, 0.15, seed=1, touching=True), 128, {}),
        ("aerial-buildings", KAMPALA, 512, {"max_building_size_m": 60.0}),
    ]
    for model, image, chunk_size, kw in cases:
        single = buildings(tmp_path, model, image, SINGLE_CHUNK, **kw)
        workers = buildings(tmp_path, model, image, chunk_size, workers=2, preload=(PRELOAD,), **kw)
        assert_same_buildings(single, workers, f"{Path(str(model)).stem}: 2 workers, --chunk-size {chunk_size}")
