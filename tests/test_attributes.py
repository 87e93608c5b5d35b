"""Tests for bldgseg.attributes: metric shape measures, colour and texture, height."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Geod, Transformer
from shapely.geometry import Polygon, box

from bldgseg.attributes import (
    IMAGE_COLUMNS,
    SHAPE_COLUMNS,
    height_attributes,
    image_attributes,
    shape_attributes,
)
from bldgseg.errors import InputError
from bldgseg.vectorize import mask_to_polygons

GEOD = Geod(ellps="WGS84")
LON0, LAT0 = 9.0, 60.0


def _geodesic_area(gdf: gpd.GeoDataFrame) -> float:
    lonlat = gdf.to_crs(4326).geometry.iloc[0]
    area, _ = GEOD.geometry_area_perimeter(shapely.segmentize(lonlat, 1e-5))
    return abs(area)


def _write(path: Path, data: np.ndarray, transform: Affine, crs, nodata=None) -> Path:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


# -------------------- shape


def _square_mask(n: int = 20, size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[10 : 10 + n, 10 : 10 + n] = True
    return mask


def test_square_area_in_mercator_at_60n():
    x0, y0 = Transformer.from_crs(4326, 3857, always_xy=True).transform(LON0, LAT0)
    # Mercator scale at 60 N is 2: 2 m Mercator pixels are 1 m on the ground, the building's side is 40 m
    gdf = mask_to_polygons(_square_mask(), Affine(2.0, 0, x0, 0, -2.0, y0), 3857)
    side = math.sqrt(gdf.geometry.iloc[0].area)
    assert side == pytest.approx(40.0)
    attrs = shape_attributes(gdf).iloc[0]
    geodesic = _geodesic_area(gdf)
    assert geodesic == pytest.approx(400.0, rel=0.01)
    assert attrs["area_m2"] == pytest.approx(geodesic, rel=0.005)
    assert attrs["perimeter_m"] == pytest.approx(80.0, rel=0.01)
    assert attrs["width_m"] == pytest.approx(20.0, rel=0.01)
    assert attrs["length_m"] == pytest.approx(20.0, rel=0.01)
    assert attrs["compactness"] == pytest.approx(math.pi / 4, rel=1e-3)
    assert attrs["rectangularity"] == pytest.approx(1.0, rel=1e-4)
    assert attrs["centroid_lat"] == pytest.approx(LAT0, abs=1e-3)
    assert attrs["centroid_lon"] == pytest.approx(LON0, abs=1e-3)


def test_square_area_in_degrees():
    # 1e-5 deg of latitude is ~1.12 m; 2e-5 deg of longitude at 60 N is ~1.12 m
    gdf = mask_to_polygons(_square_mask(), Affine(2e-5, 0, LON0, 0, -1e-5, LAT0), 4326)
    attrs = shape_attributes(gdf).iloc[0]
    geodesic = _geodesic_area(gdf)
    assert geodesic == pytest.approx(20 * 20 * 1.116 * 1.116, rel=0.02)
    assert attrs["area_m2"] == pytest.approx(geodesic, rel=0.005)
    assert attrs["width_m"] == pytest.approx(math.sqrt(geodesic), rel=0.01)


def test_square_area_in_utm_zone_edge():
    # far from the central meridian of zone 32 (9 E) the UTM scale error is largest
    x0, y0 = Transformer.from_crs(4326, 32632, always_xy=True).transform(11.9, LAT0)
    gdf = mask_to_polygons(_square_mask(), Affine(1.0, 0, x0, 0, -1.0, y0), 32632)
    attrs = shape_attributes(gdf).iloc[0]
    assert attrs["area_m2"] == pytest.approx(_geodesic_area(gdf), rel=0.005)


def test_rotated_rectangle_width_length_orientation():
    # exact rectangle 30 m x 12 m, long side 30 degrees east of north, in UTM and in Mercator at 60 N
    rect = shapely.affinity.rotate(box(-15, -6, 15, 6), 60.0, origin=(0, 0))  # 60 ccw from east = az 30
    for crs, scale in ((32632, 1.0), (3857, 2.0)):
        x0, y0 = Transformer.from_crs(4326, crs, always_xy=True).transform(LON0, LAT0)
        geom = shapely.affinity.translate(shapely.affinity.scale(rect, scale, scale, origin=(0, 0)), x0, y0)
        attrs = shape_attributes(gpd.GeoDataFrame(geometry=[geom], crs=crs)).iloc[0]
        assert attrs["length_m"] == pytest.approx(30.0, rel=2e-3)
        assert attrs["width_m"] == pytest.approx(12.0, rel=2e-3)
        assert attrs["orientation_deg"] == pytest.approx(30.0, abs=0.2)
        # EPSG:3857 is spherical Mercator on ellipsoidal coordinates: not exactly conformal on the ground
        assert attrs["rectangularity"] == pytest.approx(1.0, rel=1e-3)


def test_rotated_rectangle_from_mask_within_one_pixel():
    from skimage.draw import polygon as draw_polygon

    # 30 px x 12 px rotated 30 degrees (clockwise on the map: rows go down), 1 m pixels in UTM
    a = math.radians(30.0)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = np.array([(-15, -6), (15, -6), (15, 6), (-15, 6)], dtype=float) @ rot.T + (40.3, 40.7)
    mask = np.zeros((80, 80), dtype=bool)
    rr, cc = draw_polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, mask.shape)
    mask[rr, cc] = True
    transform = Affine(1.0, 0, 500_000.0, 0, -1.0, 6_650_000.0)
    for regularize, tol in ((True, 1.0), (False, 1.5)):  # the raw staircase's envelope reaches pixel corners
        gdf = mask_to_polygons(mask, transform, 32632, regularize=regularize)
        attrs = shape_attributes(gdf).iloc[0]
        assert attrs["length_m"] == pytest.approx(30.0, abs=tol)
        assert attrs["width_m"] == pytest.approx(12.0, abs=tol)
        assert attrs["orientation_deg"] == pytest.approx(120.0, abs=3.0)
        assert attrs["area_m2"] == pytest.approx(360.0, rel=0.02)


def test_shape_attributes_empty_and_index():
    empty = shape_attributes(gpd.GeoDataFrame(geometry=[], crs=4326))
    assert list(empty.columns) == SHAPE_COLUMNS and len(empty) == 0
    gdf = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 20), Polygon()], crs=32632, index=["a", "b"])
    attrs = shape_attributes(gdf)
    assert attrs.index.tolist() == ["a", "b"]
    orientation = attrs.loc["a", "orientation_deg"]
    assert min(orientation, 180.0 - orientation) < 0.5  # long side north-south
    assert attrs.loc["b"].isna().all()


# -------------------- image


UTM_T = Affine(0.5, 0, 500_000.0, 0, -0.5, 6_650_000.0)


def _rgb_scene(tmp_path: Path, nodata=None) -> Path:
    rgb = np.zeros((3, 60, 60), dtype=np.uint8)
    yy, xx = np.mgrid[:60, :60]
    checker = ((yy + xx) % 2 * 255).astype(np.uint8)
    rgb[:] = checker  # checkerboard everywhere ...
    rgb[0, 10:30, 10:30], rgb[1, 10:30, 10:30], rgb[2, 10:30, 10:30] = 200, 100, 50  # ... but a flat roof
    rgb[:, 0:8, 30:38] = 90  # a second flat roof on the raster's top edge
    return _write(tmp_path / "scene.tif", rgb, UTM_T, 32632, nodata=nodata)


def _pix_box(c0: int, r0: int, c1: int, r1: int) -> Polygon:
    x0, y0 = UTM_T @ (c0, r0)
    x1, y1 = UTM_T @ (c1, r1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def test_image_attributes_flat_roof_and_checkerboard(tmp_path):
    path = _rgb_scene(tmp_path)
    gdf = gpd.GeoDataFrame(
        geometry=[
            _pix_box(12, 12, 28, 28),  # flat roof, surrounded by checkerboard that must not leak in
            _pix_box(40, 5, 55, 20),  # checkerboard
            _pix_box(200, 200, 210, 210),  # outside the raster
        ],
        crs=32632,
        index=[10, 11, 12],
    )
    # footprints given in another CRS are reprojected to the raster's
    out = image_attributes(gdf.to_crs(4326), path)
    assert list(out.columns) == IMAGE_COLUMNS
    assert out.index.tolist() == [10, 11, 12]
    flat, checker, outside = out.loc[10], out.loc[11], out.loc[12]
    assert (flat["mean_r"], flat["mean_g"], flat["mean_b"]) == pytest.approx((200.0, 100.0, 50.0))
    assert (flat["std_r"], flat["std_g"], flat["std_b"]) == pytest.approx((0.0, 0.0, 0.0))
    assert flat["texture_contrast"] == pytest.approx(0.0)
    assert flat["texture_homogeneity"] == pytest.approx(1.0)
    assert flat["texture_energy"] == pytest.approx(1.0)
    assert flat["texture_entropy"] == pytest.approx(0.0)
    assert checker["texture_contrast"] > 100 * max(flat["texture_contrast"], 1.0)
    assert checker["texture_entropy"] > flat["texture_entropy"]
    assert checker["mean_r"] == pytest.approx(127.5, abs=2.0)
    assert outside.isna().all()


def test_image_attributes_excludes_nodata_and_partial_footprints(tmp_path):
    path = _rgb_scene(tmp_path, nodata=0)
    gdf = gpd.GeoDataFrame(
        geometry=[_pix_box(40, 38, 60, 44), _pix_box(30, -10, 38, 8)],  # nodata zeros inside; half outside
        crs=32632,
    )
    out = image_attributes(gdf, path)
    # checkerboard zeros are nodata too, so only 255 pixels remain in the first footprint
    assert out.loc[0, "mean_r"] == pytest.approx(255.0)
    assert out.loc[1, "mean_r"] == pytest.approx(90.0)  # the part inside the raster
    assert np.isfinite(out.loc[1, "texture_contrast"])


def test_image_attributes_16_bit(tmp_path):
    with rasterio.open(_rgb_scene(tmp_path)) as src:
        rgb16 = src.read().astype(np.uint16) * 16
    path = _write(tmp_path / "scene16.tif", rgb16, UTM_T, 32632)
    gdf = gpd.GeoDataFrame(geometry=[_pix_box(12, 12, 28, 28), _pix_box(40, 5, 55, 20)], crs=32632)
    out = image_attributes(gdf, path)
    assert out.loc[0, ["mean_r", "mean_g", "mean_b"]].tolist() == pytest.approx([3200.0, 1600.0, 800.0])
    assert out.loc[0, "texture_contrast"] == pytest.approx(0.0)
    assert out.loc[1, "texture_contrast"] > 100


def test_image_attributes_bad_bands(tmp_path):
    path = _rgb_scene(tmp_path)
    gdf = gpd.GeoDataFrame(geometry=[_pix_box(12, 12, 28, 28)], crs=32632)
    with pytest.raises(InputError, match="scene.tif"):
        image_attributes(gdf, path, bands=(1, 2, 5))


def test_image_attributes_many_footprints_fast(tmp_path):
    import time

    path = _rgb_scene(tmp_path)
    geoms = [_pix_box(c, r, c + 3, r + 3) for r in range(0, 57, 3) for c in range(0, 57, 3)] * 3
    gdf = gpd.GeoDataFrame(geometry=geoms, crs=32632)
    start = time.perf_counter()
    out = image_attributes(gdf, path)
    assert time.perf_counter() - start < 10.0
    assert out["mean_r"].notna().all()


# -------------------- height


def test_height_from_ndsm(tmp_path):
    ndsm = np.zeros((40, 40), dtype=np.float32)
    ndsm[10:20, 10:20] = 9.0
    ndsm[10, 10] = -9999.0  # nodata inside the box
    path = _write(tmp_path / "ndsm.tif", ndsm, UTM_T, 32632, nodata=-9999.0)
    gdf = gpd.GeoDataFrame(
        geometry=[_pix_box(10, 10, 20, 20), _pix_box(25, 25, 35, 35), _pix_box(100, 100, 110, 110)],
        crs=32632,
    )
    h = height_attributes(gdf, ndsm=path)
    assert h.name == "height_m"
    assert h.iloc[0] == pytest.approx(9.0)
    assert h.iloc[1] == pytest.approx(0.0)
    assert math.isnan(h.iloc[2])


def test_height_from_dsm_minus_dtm_on_different_grids(tmp_path):
    dsm = np.full((40, 40), 105.0, dtype=np.float32)
    dsm[10:20, 10:20] = 114.0
    dsm_path = _write(tmp_path / "dsm.tif", dsm, UTM_T, 32632, nodata=-9999.0)
    # DTM with 1 m pixels on a shifted grid (warped onto the DSM's), ground at 105
    x0, y0 = UTM_T @ (-4, -4)
    dtm_t = Affine(1.0, 0, x0, 0, -1.0, y0)
    dtm = np.full((30, 30), 105.0, dtype=np.float32)
    dtm_path = _write(tmp_path / "dtm.tif", dtm, dtm_t, 32632, nodata=-9999.0)
    gdf = gpd.GeoDataFrame(geometry=[_pix_box(10, 10, 20, 20), _pix_box(22, 22, 30, 30)], crs=32632)
    h = height_attributes(gdf.to_crs(3857), dsm=dsm_path, dtm=dtm_path)
    assert h.tolist() == pytest.approx([9.0, 0.0])
    same_grid = _write(tmp_path / "dtm_same.tif", np.full((40, 40), 105.0, np.float32), UTM_T, 32632)
    assert height_attributes(gdf, dsm=dsm_path, dtm=same_grid).tolist() == pytest.approx([9.0, 0.0])


def test_height_needs_both_dsm_and_dtm(tmp_path):
    gdf = gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=32632)
    with pytest.raises(InputError, match="dsm.tif"):
        height_attributes(gdf, dsm=tmp_path / "dsm.tif")
    with pytest.raises(InputError, match="dtm.tif"):
        height_attributes(gdf, dtm=tmp_path / "dtm.tif")


def test_height_without_rasters_is_nan():
    gdf = gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=32632, index=[4])
    h = height_attributes(gdf)
    assert h.name == "height_m" and h.index.tolist() == [4] and h.isna().all()


# -------------------- per-block statistics against the per-footprint reference


def _reference_image_attributes(gdf: gpd.GeoDataFrame, path: Path) -> np.ndarray:
    """The previous implementation: one window read, mask and skimage GLCM per footprint (IMAGE_COLUMNS)."""
    from rasterio.features import geometry_mask
    from rasterio.windows import from_bounds

    from bldgseg.io import valid_pixels
    from bldgseg.texture import glcm_texture, luma

    rows = np.full((len(gdf), len(IMAGE_COLUMNS)), np.nan)
    with rasterio.open(path) as ds:
        for pos, geom in enumerate(gdf.to_crs(ds.crs).geometry):
            exact = from_bounds(*geom.bounds, transform=ds.transform)
            c0, r0 = max(math.floor(exact.col_off), 0), max(math.floor(exact.row_off), 0)
            c1 = min(math.ceil(exact.col_off + exact.width), ds.width)
            r1 = min(math.ceil(exact.row_off + exact.height), ds.height)
            win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
            data = ds.read([1, 2, 3], window=win).astype(np.float64)
            wt = ds.window_transform(win)
            inside = geometry_mask([geom], out_shape=data.shape[1:], transform=wt, invert=True)
            if not inside.any():
                inside = geometry_mask([geom], out_shape=data.shape[1:], transform=wt, invert=True, all_touched=True)
            inside &= valid_pixels(ds.read_masks([1, 2, 3], window=win), data)
            if not inside.any():
                continue
            pix = data[:, inside]
            texture = glcm_texture(luma(data), inside, 0.0, 256.0)
            values = {f"mean_{c}": pix[k].mean() for k, c in enumerate("rgb")}
            values.update({f"std_{c}": pix[k].std() for k, c in enumerate("rgb")}, **texture)
            rows[pos] = [values.get(column, np.nan) for column in IMAGE_COLUMNS]
    return rows


@pytest.mark.parametrize(
    ("image", "labels"),
    [
        ("kampala_OAM-309606-261636-19.tif", "kampala_buildings.geojson"),
        ("zanzibar_OAM-319297-270996-19.tif", "zanzibar_buildings.geojson"),
        ("zanzibar_OAM-319298-270996-19.tif", "zanzibar_buildings.geojson"),
        ("zanzibar_OAM-319299-270996-19.tif", "zanzibar_buildings.geojson"),
    ],
)
def test_block_statistics_equal_the_per_footprint_ones_on_real_buildings(image, labels):
    """Colour and GLCM texture of real OpenStreetMap footprints on real imagery, per block vs per footprint.

    Tolerance: 1e-9 relative (summation order). Both compute the luma pixel by pixel in a fixed order (a BLAS
    dot product in the reference put one of 15 buildings' pixels on the other side of a GLCM level boundary on
    an AMD EPYC VM, 2026-12-07); up to 2 % of the buildings may still differ there by up to 5 %."""
    from tests.conftest import SAMPLE

    path = SAMPLE / "images" / image
    with rasterio.open(path) as ds:
        footprints = gpd.read_file(SAMPLE / "labels" / labels).to_crs(ds.crs)
        footprints = footprints[footprints.intersects(box(*ds.bounds))].reset_index(drop=True)
    assert len(footprints) >= 10
    new = image_attributes(footprints, path).to_numpy()
    old = _reference_image_attributes(footprints, path)
    assert np.array_equal(np.isnan(new), np.isnan(old))
    close = np.isclose(new, old, rtol=1e-9, atol=1e-9, equal_nan=True)
    colour = [IMAGE_COLUMNS.index(c) for c in IMAGE_COLUMNS if not c.startswith("texture_")]
    assert close[:, colour].all()
    assert close.all(axis=1).mean() >= 0.98
    assert np.allclose(new, old, rtol=0.05, atol=1e-3, equal_nan=True)


def test_overlapping_and_tiny_footprints_keep_their_own_pixels(tmp_path):
    """Footprints whose interiors overlap are measured on separate label layers; one covering no pixel centre
    takes the pixels it touches: each row equals the footprint measured alone."""
    path = _rgb_scene(tmp_path)
    geoms = [
        _pix_box(10, 10, 30, 30),
        _pix_box(20, 20, 45, 40),  # overlaps the first
        _pix_box(25, 5, 35, 25),  # overlaps both
        _pix_box(30, 10, 40, 20).buffer(-0.0),  # touches the first along an edge only
        box(*(UTM_T @ (50.2, 50.2)), *(UTM_T @ (50.4, 50.4))).envelope,  # no pixel centre inside
    ]
    gdf = gpd.GeoDataFrame(geometry=geoms, crs=32632)
    together = image_attributes(gdf, path)
    for i in range(len(gdf)):
        alone = image_attributes(gdf.iloc[[i]], path)
        assert np.allclose(together.iloc[i], alone.iloc[0], rtol=1e-9, equal_nan=True), i
    assert together[["mean_r", "std_r"]].notna().all().all()  # the tiny one's single pixel has no GLCM pair


def test_blocks_measured_in_threads_give_the_serial_numbers(monkeypatch):
    """Real OSM footprints on the 1024-px Kampala mosaic, cut into many small blocks: the same rows with 1 and 3
    threads (each block's footprints are their own rows; each thread reads through its own dataset)."""
    from bldgseg import attributes as attributes_module
    from bldgseg.footprint_blocks import iter_label_blocks
    from tests.conftest import SAMPLE

    path = SAMPLE / "images" / "kampala_mosaic_z20.tif"
    with rasterio.open(path) as ds:
        footprints = gpd.read_file(SAMPLE / "labels" / "kampala_buildings.geojson").to_crs(ds.crs)
        footprints = footprints[footprints.intersects(box(*ds.bounds))].reset_index(drop=True)
    monkeypatch.setattr(attributes_module, "iter_label_blocks", lambda ds, geoms: iter_label_blocks(ds, geoms, 128))
    serial = image_attributes(footprints, path).to_numpy()
    threaded = image_attributes(footprints, path, threads=3).to_numpy()
    assert len(footprints) >= 50 and np.isfinite(serial).all(axis=1).mean() > 0.9
    np.testing.assert_array_equal(threaded, serial)
