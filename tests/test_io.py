"""Tests for bldgseg.io: discovery, validation, GSD, stretch and windowed reads on real GeoTIFFs."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

from bldgseg.errors import InputError
from bldgseg.io import (
    RasterInfo,
    SkippedInput,
    discover_inputs,
    estimate_stretch,
    ground_sample_distance,
    open_raster_info,
    read_rgb,
    scan_inputs,
    valid_pixels,
)

# rasterio 1.4 with affine 3 warns about `transform * window` inside its own boundless-read code.
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

UTM = "EPSG:32636"
UTM_TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 3500000.0)


def write_tif(path: Path, data: np.ndarray, crs: str | None = UTM, transform=UTM_TRANSFORM, **kw) -> Path:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF and return its path."""
    count, height, width = data.shape
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
    )
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def rgb_array(height: int = 64, width: int = 80, value: int = 200) -> np.ndarray:
    data = np.full((3, height, width), value, dtype=np.uint8)
    data[1] //= 2
    data[2] //= 4
    return data


# ------------------------------------------------------------------------------------------- discovery


def test_discover_inputs_folders_files_dedup(tmp_path: Path) -> None:
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    for rel in [
        "x.tif",
        "a/y.tiff",
        "a/b/z.TIF",
        "a/b/m.vrt",
        "a/b/j.jp2",
        "a/b/i.img",
        "x.tif.aux.xml",
        "x.tif.ovr",
        "notes.txt",
    ]:
        (tmp_path / rel).write_bytes(b"")
    found = discover_inputs([tmp_path, tmp_path / "x.tif"])
    names = [p.name for p in found]
    assert found == sorted(found)
    assert set(names) == {"x.tif", "y.tiff", "z.TIF", "m.vrt", "j.jp2", "i.img"}
    assert len(found) == len(set(found))
    assert all(p.is_absolute() for p in found)
    # A custom glob searches only that pattern; a file given directly is kept whatever its extension.
    assert [p.name for p in discover_inputs(tmp_path, glob="*.vrt")] == ["m.vrt"]
    assert [p.name for p in discover_inputs([tmp_path / "notes.txt"])] == ["notes.txt"]


def test_discover_inputs_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.tif: no such file or folder; check the path"):
        discover_inputs([tmp_path / "nope.tif"])


# -------------------------------------------------------------------------------------- metadata / GSD


def test_open_raster_info_utm(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "utm.tif", rgb_array())
    info = open_raster_info(path)
    assert isinstance(info, RasterInfo)
    assert (info.width, info.height, info.count, info.dtype) == (80, 64, 3, "uint8")
    assert info.bands == (1, 2, 3)
    assert info.stretch is None and info.nodata is None and info.has_mask is False
    assert info.crs.to_epsg() == 32636
    # 0.5 m UTM pixel; scale factor at 33E (central meridian) is 0.9996.
    assert info.gsd_m == pytest.approx(0.5 / 0.9996, rel=1e-4)
    assert pickle.loads(pickle.dumps(info)) == info


def test_gsd_web_mercator_60n(tmp_path: Path) -> None:
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(25.0, 60.0)
    transform = from_origin(x - 0.6 * 40, y + 0.6 * 32, 0.6, 0.6)
    path = write_tif(tmp_path / "wm.tif", rgb_array(), crs="EPSG:3857", transform=transform)
    assert open_raster_info(path).gsd_m == pytest.approx(0.3, rel=0.005)


def test_gsd_geographic_equator() -> None:
    from rasterio.crs import CRS

    transform = from_origin(30.0 - 5e-4, 5e-4, 1e-5, 1e-5)
    gsd = ground_sample_distance(CRS.from_epsg(4326), transform, 100, 100)
    assert gsd == pytest.approx((1.11319 + 1.10574) / 2, rel=1e-3)


def test_gsd_feet_crs() -> None:
    # NY Long Island (US survey feet): a 1 ft pixel is ~0.3048 m on the ground.
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:2263", always_xy=True).transform(-73.95, 40.75)
    gsd = ground_sample_distance("EPSG:2263", from_origin(x, y, 1.0, 1.0), 10, 10)
    assert gsd == pytest.approx(0.3048, rel=1e-3)


# ----------------------------------------------------------------------------------------- error cases


def test_single_band_needs_bands(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "grey.tif", rgb_array()[:1])
    with pytest.raises(InputError) as err:
        open_raster_info(path)
    message = str(err.value)
    assert message.startswith("grey.tif: ") and "--bands" in message and "found 1" in message
    assert "\n" not in message
    info = open_raster_info(path, bands=(1, 1, 1))
    assert info.bands == (1, 1, 1)
    rgb, valid = read_rgb(info, Window(0, 0, 8, 8))
    assert rgb.shape == (3, 8, 8) and valid.all() and (rgb == 200).all()


def test_band_out_of_range(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "rgb.tif", rgb_array())
    with pytest.raises(InputError, match=r"^rgb\.tif: band 4 is out of range.*--bands$"):
        open_raster_info(path, bands=(4, 2, 1))
    assert open_raster_info(path, bands=(3, 2, 1)).bands == (3, 2, 1)


def test_no_crs(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "nocrs.tif", rgb_array(), crs=None)
    pattern = r"^nocrs\.tif: has no coordinate reference system; .*gdal_edit\.py -a_srs"
    with pytest.raises(InputError, match=pattern):
        open_raster_info(path)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_no_geotransform(tmp_path: Path) -> None:
    path = tmp_path / "nogt.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8", crs=UTM) as ds:
        ds.write(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"^nogt\.tif: has no geotransform"):
        open_raster_info(path)


def test_truncated_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 512, 512), dtype=np.uint8)
    path = write_tif(
        tmp_path / "cut.tif", data, tiled=True, blockxsize=256, blockysize=256, compress="deflate"
    )
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(InputError) as err:
        open_raster_info(path)
    message = str(err.value)
    assert message.startswith("cut.tif: ") and "truncated" in message and "\n" not in message


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.tif"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(InputError) as err:
        open_raster_info(path)
    assert str(err.value).startswith("junk.tif: cannot be opened as a raster")
    assert "\n" not in str(err.value)


def test_scan_inputs_collects_bad_files(tmp_path: Path) -> None:
    write_tif(tmp_path / "good1.tif", rgb_array())
    write_tif(tmp_path / "sub_good2.tif", rgb_array())
    write_tif(tmp_path / "grey.tif", rgb_array()[:1])
    write_tif(tmp_path / "nocrs.tif", rgb_array(), crs=None)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    good, skipped = scan_inputs([tmp_path])
    assert sorted(i.path.name for i in good) == ["good1.tif", "sub_good2.tif"]
    assert sorted(s.path.name for s in skipped) == ["grey.tif", "junk.tif", "nocrs.tif"]
    for s in skipped:
        assert isinstance(s, SkippedInput) and s.reason.startswith(s.path.name + ": ")
    # With --bands 1,1,1 every file that has a band 1 and georeferencing is usable.
    good, skipped = scan_inputs([tmp_path], bands=(1, 1, 1))
    assert sorted(i.path.name for i in good) == ["good1.tif", "grey.tif", "sub_good2.tif"]
    assert len(skipped) == 2


# --------------------------------------------------------------------------------------- reads / masks


def test_uint16_stretch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(1000, 3001, (3, 64, 80), dtype=np.uint16)
    path = write_tif(tmp_path / "u16.tif", data)
    info = open_raster_info(path)
    assert info.dtype == "uint16" and info.stretch is not None and len(info.stretch) == 3
    for low, high in info.stretch:
        assert 1000 <= low < 1100 and 2900 < high <= 3000
    with rasterio.open(path) as ds:
        assert estimate_stretch(ds, info.bands) == info.stretch
    rgb, valid = read_rgb(info, Window(0, 0, 80, 64))
    assert rgb.dtype == np.uint8 and valid.all()
    assert rgb.min() == 0 and rgb.max() == 255
    low, high = info.stretch[0]
    expected = np.clip(np.rint((data[0].astype(np.float64) - low) * 255.0 / (high - low)), 0, 255)
    assert np.abs(rgb[0].astype(int) - expected.astype(int)).max() <= 1


def test_float_nan_invalid(tmp_path: Path) -> None:
    data = np.linspace(0.0, 1.0, 3 * 16 * 16, dtype=np.float32).reshape(3, 16, 16)
    data[:, 0, 0] = np.nan
    info = open_raster_info(write_tif(tmp_path / "f.tif", data))
    assert info.stretch is not None and info.has_mask
    rgb, valid = read_rgb(info, Window(0, 0, 16, 16))
    assert not valid[0, 0] and valid.sum() == 16 * 16 - 1 and rgb[:, 0, 0].tolist() == [0, 0, 0]


def test_stretch_ignores_nodata(tmp_path: Path) -> None:
    data = np.full((3, 32, 32), 500, dtype=np.uint16)
    data[:, :, 16:] = 600
    data[:, :16, :] = 0  # nodata, would drag the low percentile to 0
    with rasterio.open(write_tif(tmp_path / "nd16.tif", data, nodata=0)) as ds:
        stretch = estimate_stretch(ds, (1, 2, 3))
    assert all(low >= 500 and high <= 600 for low, high in stretch)


def test_nodata_mask(tmp_path: Path) -> None:
    data = rgb_array()
    data[:, :10, :10] = 0
    info = open_raster_info(write_tif(tmp_path / "nd.tif", data, nodata=0))
    assert info.has_mask and info.nodata == 0
    rgb, valid = read_rgb(info, Window(0, 0, 80, 64))
    assert not valid[:10, :10].any() and valid[10:, :].all() and valid[:, 10:].all()
    assert (rgb[0][valid] == 200).all()


def test_alpha_band(tmp_path: Path) -> None:
    data = np.concatenate([rgb_array(), np.full((1, 64, 80), 255, np.uint8)])
    data[3, 20:30, 40:50] = 0
    path = write_tif(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    info = open_raster_info(path)
    assert info.count == 4 and info.bands == (1, 2, 3) and info.has_mask
    rgb, valid = read_rgb(info, Window(0, 0, 80, 64))
    assert valid.sum() == 64 * 80 - 100 and not valid[20:30, 40:50].any()
    assert (rgb[:, 20:30, 40:50] == 0).all()


def test_internal_mask(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "msk.tif", rgb_array())
    with rasterio.open(path, "r+") as ds:
        mask = np.full((64, 80), 255, np.uint8)
        mask[50:, 70:] = 0
        ds.write_mask(mask)
    info = open_raster_info(path)
    assert info.has_mask
    _rgb, valid = read_rgb(info, Window(0, 0, 80, 64))
    assert valid.sum() == 64 * 80 - 14 * 10 and not valid[50:, 70:].any()


def test_boundless_read_partly_outside(tmp_path: Path) -> None:
    info = open_raster_info(write_tif(tmp_path / "b.tif", rgb_array()))
    rgb, valid = read_rgb(info, Window(-10, -5, 40, 30))
    assert rgb.shape == (3, 30, 40) and valid.shape == (30, 40)
    assert not valid[:5, :].any() and not valid[:, :10].any()
    assert valid[5:, 10:].all()
    assert (rgb[0, 5:, 10:] == 200).all() and (rgb[:, :5, :] == 0).all()
    # Bottom-right corner too, and a window entirely outside.
    _rgb, valid = read_rgb(info, Window(70, 60, 20, 20))
    assert valid[:4, :10].all() and valid.sum() == 40
    rgb, valid = read_rgb(info, Window(200, 200, 16, 16))
    assert not valid.any() and not rgb.any()


def test_boundless_read_with_nodata_and_out_shape(tmp_path: Path) -> None:
    data = rgb_array()
    data[:, :, :8] = 0
    info = open_raster_info(write_tif(tmp_path / "bn.tif", data, nodata=0))
    _rgb, valid = read_rgb(info, Window(-16, 0, 48, 32), out_shape=(16, 24))
    assert not valid[:, :12].any() and valid[:, 12:].all()


def test_out_shape_resampling(tmp_path: Path) -> None:
    data = rgb_array()
    data[0, :, 40:] = 100
    info = open_raster_info(write_tif(tmp_path / "r.tif", data))
    rgb, valid = read_rgb(info, Window(0, 0, 80, 64), out_shape=(32, 40))
    assert rgb.shape == (3, 32, 40) and valid.shape == (32, 40) and valid.all()
    assert (rgb[0, :, :20] == 200).all() and (rgb[0, :, 20:] == 100).all()
    rgb, valid = read_rgb(info, Window(0, 0, 10, 10), out_shape=(20, 20))
    assert rgb.shape == (3, 20, 20) and valid.all() and (rgb[0] == 200).all()


def test_checkerboard_average_when_shrinking(tmp_path: Path) -> None:
    data = np.zeros((3, 16, 16), np.uint8)
    data[:, ::2, ::2] = 200
    data[:, 1::2, 1::2] = 200
    info = open_raster_info(write_tif(tmp_path / "cb.tif", data))
    rgb, _valid = read_rgb(info, Window(0, 0, 16, 16), out_shape=(8, 8))
    assert (rgb == 100).all()  # average, not nearest
    assert math.isclose(float(rgb.mean()), 100.0)


def test_valid_pixels_rule():
    masks = np.array([[[255, 0], [255, 255]], [[255, 255], [255, 0]]], np.uint8)
    data = np.array([[[1.0, 2.0], [np.nan, 4.0]], [[1.0, 2.0], [3.0, 4.0]]], np.float32)
    assert valid_pixels(masks, data).tolist() == [[True, False], [False, False]]
    assert valid_pixels(masks[0]).tolist() == [[True, False], [True, True]]
    assert valid_pixels(masks[1], data[0]).tolist() == [[True, True], [False, False]]
