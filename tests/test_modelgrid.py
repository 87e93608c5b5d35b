"""The model grid of a raster: any part of it gives bit for bit the pixels, windows and maps of the whole."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from bldgseg.inference import Predictor
from bldgseg.io import open_raster_info
from bldgseg.modelgrid import ModelGrid
from bldgseg.models import ModelCard
from bldgseg.resample import maps_to_source, read_model_region, valid_to_source
from bldgseg.tiling import WindowLayout, plan_layout
from tests.conftest import write_rgb
from tests.context_models import ContextInstanceNet, ContextNet

#: source GSD / model GSD: the sample mosaic's 0.1493 m into 0.3 m, exactly half, 0.7, 0.5 m into 0.3 m, 1:1
SCALES = [0.4976, 0.5, 0.7, 5 / 3, 1.0]


def noise_raster(tmp_path, height: int = 157, width: int = 203):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (3, height, width), dtype=np.uint8)
    valid = np.ones((height, width), bool)
    valid[40:70, 90:150] = False  # a nodata hole
    path = write_rgb(tmp_path / "noise.tif", rgb, transform=from_origin(0, 0, 0.15, 0.15), mask=valid)
    return open_raster_info(path)


def random_windows(rng, height: int, width: int, count: int = 25) -> list[Window]:
    windows = []
    for _ in range(count):
        r0, c0 = int(rng.integers(0, height - 1)), int(rng.integers(0, width - 1))
        r1, c1 = int(rng.integers(r0 + 1, height + 1)), int(rng.integers(c0 + 1, width + 1))
        windows.append(Window(c0, r0, c1 - c0, r1 - r0))
    return windows


@pytest.mark.parametrize("scale", SCALES)
def test_any_region_of_the_model_grid_reads_as_in_the_whole_raster(tmp_path, monkeypatch, scale):
    info = noise_raster(tmp_path)
    grid = ModelGrid.for_raster(info.height, info.width, scale, 64, 16)
    height, width = grid.shape
    whole_rgb, whole_valid = read_model_region(info, grid, Window(0, 0, width, height))
    assert whole_rgb.shape == (3, height, width) and 0.3 < whole_valid.mean() < 1
    monkeypatch.setattr("bldgseg.resample.STRIP_ROWS", 7)  # parts read in other strips than the whole
    for window in random_windows(np.random.default_rng(1), height, width):
        rgb, valid = read_model_region(info, grid, window)
        rows, cols = window.toslices()
        assert np.array_equal(rgb, whole_rgb[:, rows, cols]) and np.array_equal(valid, whole_valid[rows, cols])
    # the values are GDAL's (average when shrinking, bilinear when enlarging) up to rounding and edge handling
    with rasterio.open(info.path) as ds:
        shrink = height < info.height
        gdal = ds.read(out_shape=(3, height, width), resampling=Resampling.average if shrink else Resampling.bilinear)
    inner = np.s_[:, 2:-2, 2:-2]
    close = np.abs(whole_rgb[inner].astype(int) - gdal[inner]) <= 1
    assert close[:, whole_valid[2:-2, 2:-2]].mean() > (0.97 if scale < 1 else 0.6)


@pytest.mark.parametrize("scale", SCALES)
def test_maps_resampled_back_from_a_chunk_region_match_the_whole_raster(monkeypatch, scale):
    grid = ModelGrid.for_raster(157, 203, scale, 64, 16)
    rng = np.random.default_rng(2)
    maps = rng.random((4, *grid.shape), dtype=np.float32)
    valid = rng.random(grid.shape) > 0.2
    everything = Window(0, 0, 203, 157)
    whole = maps_to_source(maps, grid, (0, 0), everything, offset_channels=(2, 3))
    whole_valid = valid_to_source(valid, grid, (0, 0), everything)
    monkeypatch.setattr("bldgseg.resample.STRIP_ROWS", 7)
    for read in random_windows(rng, 157, 203):
        region = grid.chunk_region(read).model
        rows, cols = region.toslices()
        origin = (int(region.row_off), int(region.col_off))
        part = maps_to_source(maps[:, rows, cols], grid, origin, read, offset_channels=(2, 3))
        read_rows, read_cols = read.toslices()
        assert np.array_equal(part, whole[:, read_rows, read_cols])
        part_valid = valid_to_source(valid[rows, cols], grid, origin, read)
        assert np.array_equal(part_valid, whole_valid[read_rows, read_cols])
    # offsets in model pixels become source pixels
    assert np.allclose(whole[2].mean() / whole[1].mean(), 157 / grid.shape[0], rtol=0.05)


def test_a_chunk_runs_the_global_windows_that_touch_it_and_grows_by_less_than_one_window():
    grid = ModelGrid.for_raster(2000, 1500, 0.4976, 512, 64)
    assert grid.shape == (995, 746) and grid.layout.rows == (0, 448, 483) and grid.layout.cols == (0, 234)
    region = grid.chunk_region(Window(600, 300, 500, 400))
    model = region.model
    # model rows 148..349 and cols 298..548 are needed: touched by row window 0 (0..512) and column
    # windows 0 (0..512) and 234 (234..746)
    assert (grid.rows.to_source(300, 700).span(), grid.cols.to_source(600, 1100).span()) == ((148, 349), (298, 548))
    assert (model.row_off, model.row_off + model.height) == (0, 512)
    assert (model.col_off, model.col_off + model.width) == (0, 746)
    assert region.layout == WindowLayout(512, (0,), (0, 234))
    for chunk in [Window(0, 0, 100, 100), Window(1400, 1900, 100, 100), Window(700, 900, 64, 64)]:
        region = grid.chunk_region(chunk)
        need_rows = grid.rows.to_source(chunk.row_off, chunk.row_off + chunk.height).span()
        assert region.model.row_off > need_rows[0] - 512 and region.model.row_off <= need_rows[0]
        assert need_rows[1] <= region.model.row_off + region.model.height < need_rows[1] + 512


def test_the_small_image_rule_applies_to_whole_rasters_only():
    # a raster smaller than a window is one window of its own size (rounded up to 32), whatever the overlap
    assert plan_layout(40, 40, 512, 64) == WindowLayout(64, (0,), (0,))
    assert plan_layout(300, 200, 512, 64) == WindowLayout(320, (0,), (0,))
    # a raster thinner than a window in one direction keeps full windows (padded there)
    assert plan_layout(100, 900, 512, 64) == WindowLayout(512, (0,), (0, 388))
    # a chunk of a large raster runs the raster's full-size windows, not a small image's
    grid = ModelGrid.for_raster(4096, 4096, 0.5, 512, 64)
    assert grid.chunk_region(Window(0, 0, 64, 64)).layout.tile == 512


@pytest.mark.parametrize("instances", [False, True])
def test_predicting_a_chunk_region_gives_the_whole_image_maps(instances):
    net = ContextInstanceNet() if instances else ContextNet()
    card = ModelCard(
        name="context",
        architecture="context",
        encoder="none",
        gsd_m=0.3,
        tile_size=96 if instances else 64,
        overlap=64 if instances else 16,
        head="instance" if instances else "semantic",
    )
    predictor = Predictor(net, card, "cpu", batch_size=3)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (3, 150, 230), dtype=np.uint8)
    valid = np.ones((150, 230), bool)
    valid[:, :20] = False  # windows without a valid pixel are skipped by the same rule
    predict = predictor.predict_instances if instances else (lambda *a, **k: predictor.predict(*a, **k)[None])
    whole = predict(rgb, valid)
    grid = ModelGrid.for_raster(150, 230, 1.0, card.tile_size, card.overlap)
    assert grid.layout == predictor.layout_for(150, 230)
    for read in random_windows(rng, 150, 230, count=6):
        region = grid.chunk_region(read)
        rows, cols = region.model.toslices()
        part = predict(np.ascontiguousarray(rgb[:, rows, cols]), valid[rows, cols], layout=region.layout)
        local = (slice(read.row_off - region.model.row_off, None), slice(read.col_off - region.model.col_off, None))
        got = part[:, local[0], local[1]][:, : read.height, : read.width]
        read_rows, read_cols = read.toslices()
        assert np.abs(got - whole[:, read_rows, read_cols]).max() <= 1e-6


def test_a_gsd_within_two_percent_of_the_models_runs_on_its_own_pixels():
    from bldgseg.modelgrid import NATIVE_GSD_TOLERANCE, model_scale

    assert NATIVE_GSD_TOLERANCE == 0.02
    assert model_scale(0.29691, 0.3) == 1.0  # a z19 web-mercator tile near the equator
    assert model_scale(0.30012, 0.3) == 1.0  # 0.3 m UTM pixels off the central meridian
    assert model_scale(0.29, 0.3) == pytest.approx(0.29 / 0.3)
    assert model_scale(0.15, 0.3) == 0.5
    grid = ModelGrid.for_raster(1000, 1200, model_scale(0.2969, 0.3), 512, 64)
    assert grid.identity and grid.shape == (1000, 1200)
