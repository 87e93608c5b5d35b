"""Per-building attributes: metric shape measures, colour and texture, height.

Every length and area is measured in the UTM zone of the building's own centroid (see
:mod:`bldgseg.geo_metric`); nothing is ever measured in EPSG:3857 or in degrees.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.features import geometry_mask
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from bldgseg.errors import InputError
from bldgseg.footprint_blocks import LabelBlock, iter_label_blocks
from bldgseg.geo_metric import GEOD, METRIC_EPSG_COLUMN, centroid_xy, require_crs, to_lonlat, to_metric
from bldgseg.io import valid_pixels
from bldgseg.remote import as_raster_path, gdal_path, http_env, is_remote
from bldgseg.texture import (
    TEXTURE_PROPERTIES,
    glcm_texture,
    grey_range,
    label_glcm_texture,
    luma,
    quantize_grey,
)

__all__ = [
    "IMAGE_COLUMNS",
    "SHAPE_COLUMNS",
    "height_attributes",
    "image_attributes",
    "shape_attributes",
]

SHAPE_COLUMNS = [
    "area_m2",
    "perimeter_m",
    "width_m",
    "length_m",
    "orientation_deg",
    "compactness",
    "rectangularity",
    "centroid_lon",
    "centroid_lat",
]
IMAGE_COLUMNS = [
    "texture_contrast",
    "texture_homogeneity",
    "texture_energy",
    "texture_correlation",
    "texture_entropy",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
]

#: IMAGE_COLUMNS positions of the colour statistics (mean r, g, b, std r, g, b) and of the texture properties.
_COLOUR = [IMAGE_COLUMNS.index(f"{stat}_{c}") for stat in ("mean", "std") for c in "rgb"]
_TEXTURE = [IMAGE_COLUMNS.index(f"texture_{name}") for name in TEXTURE_PROPERTIES]

# -------------------- shape


def shape_attributes(gdf: gpd.GeoDataFrame) -> pd.DataFrame:
    """Metric shape measures of each footprint (same index as ``gdf``).

    ``area_m2``, ``perimeter_m``; ``width_m``/``length_m`` the shorter/longer side of the minimum rotated
    rectangle; ``orientation_deg`` the geodesic azimuth of its long side, clockwise from true north, in
    [0, 180); ``compactness`` (Polsby-Popper 4 pi A / P^2); ``rectangularity`` (area / rectangle area);
    ``centroid_lon``, ``centroid_lat`` (WGS84). Empty geometries get NaN.
    """
    out = pd.DataFrame(np.nan, index=gdf.index, columns=SHAPE_COLUMNS, dtype=float)
    if len(gdf) == 0:
        return out
    metric = to_metric(gdf)
    geoms = np.asarray(metric.geometry.values, dtype=object)
    codes = metric[METRIC_EPSG_COLUMN].to_numpy()
    area = shapely.area(geoms)
    perim = shapely.length(geoms)
    empty = shapely.is_empty(geoms) | shapely.is_missing(geoms)
    area = np.where(empty, np.nan, area)
    perim = np.where(empty, np.nan, perim)

    n = len(geoms)
    width = np.full(n, np.nan)
    length = np.full(n, np.nan)
    rect_area = np.full(n, np.nan)
    p0 = np.full((n, 2), np.nan)
    p1 = np.full((n, 2), np.nan)
    rects = shapely.oriented_envelope(geoms)
    for i, rect in enumerate(rects):
        if rect is None or rect.is_empty or empty[i]:
            continue
        c = shapely.get_coordinates(rect)
        if rect.geom_type == "Polygon" and len(c) >= 4:
            e0, e1 = c[1] - c[0], c[2] - c[1]
            l0, l1 = float(np.hypot(*e0)), float(np.hypot(*e1))
            width[i], length[i] = min(l0, l1), max(l0, l1)
            rect_area[i] = l0 * l1
            a, b = (c[0], c[1]) if l0 >= l1 else (c[1], c[2])
        elif len(c) >= 2:  # collinear input: the envelope is a line
            d = np.hypot(*(c[-1] - c[0]))
            width[i], length[i], rect_area[i] = 0.0, float(d), 0.0
            a, b = c[0], c[-1]
        else:
            width[i], length[i], rect_area[i] = 0.0, 0.0, 0.0
            continue
        p0[i], p1[i] = a, b

    lon0, lat0 = to_lonlat(p0[:, 0], p0[:, 1], codes)
    lon1, lat1 = to_lonlat(p1[:, 0], p1[:, 1], codes)
    has = np.isfinite(lon0) & np.isfinite(lon1) & (length > 0)
    orient = np.full(n, np.nan)
    if has.any():
        az, _, _ = GEOD.inv(lon0[has], lat0[has], lon1[has], lat1[has])
        az = np.mod(np.asarray(az, dtype=float), 180.0)
        orient[has] = np.where(az >= 180.0, 0.0, az)

    cx, cy = centroid_xy(geoms)
    clon, clat = to_lonlat(cx, cy, codes)

    with np.errstate(divide="ignore", invalid="ignore"):
        compact = np.where(perim > 0, 4.0 * math.pi * area / perim**2, np.nan)
        rectangularity = np.where(rect_area > 0, area / rect_area, np.nan)

    out["area_m2"] = area
    out["perimeter_m"] = perim
    out["width_m"] = width
    out["length_m"] = length
    out["orientation_deg"] = orient
    out["compactness"] = compact
    out["rectangularity"] = rectangularity
    out["centroid_lon"] = clon
    out["centroid_lat"] = clat
    return out


# -------------------- rasters


def _in_crs(gdf: gpd.GeoDataFrame | gpd.GeoSeries, crs: Any, path: str | Path) -> np.ndarray:
    """Footprint geometries (object array, positional) in the raster CRS ``crs``."""
    if crs is None:
        raise InputError(f"{Path(path).name}: the raster has no CRS; assign one (e.g. gdal_edit.py -a_srs)")
    src_crs = require_crs(gdf)
    geoms = gdf.geometry if isinstance(gdf, gpd.GeoDataFrame) else gdf
    if not src_crs.equals(CRS.from_user_input(crs)):
        geoms = geoms.to_crs(crs)
    return np.asarray(geoms.values, dtype=object)


def _footprint_window(ds: Any, geom: Any) -> tuple[Window, np.ndarray] | None:
    """The footprint's bounding-box window clipped to the raster, and the pixels inside the footprint.

    Equivalent to ``rasterio.windows.from_bounds`` rounded outwards and intersected with the raster (also
    valid for rotated or south-up transforms). ``None`` when no pixel of the raster falls inside the
    footprint; a footprint too small to cover a pixel centre takes every pixel it touches.
    """
    if geom is None or geom.is_empty:
        return None
    minx, miny, maxx, maxy = geom.bounds
    inv = ~ds.transform
    cols, rows = zip(*(inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)), strict=True)
    c0 = max(int(math.floor(min(cols))), 0)
    r0 = max(int(math.floor(min(rows))), 0)
    c1 = min(int(math.ceil(max(cols))), ds.width)
    r1 = min(int(math.ceil(max(rows))), ds.height)
    if c1 <= c0 or r1 <= r0:
        return None
    win = Window(c0, r0, c1 - c0, r1 - r0)
    wt = ds.transform @ Affine.translation(c0, r0)
    shape = (r1 - r0, c1 - c0)
    inside = geometry_mask([geom], out_shape=shape, transform=wt, invert=True)
    if not inside.any():
        inside = geometry_mask([geom], out_shape=shape, transform=wt, invert=True, all_touched=True)
    if not inside.any():
        return None
    return win, inside


def _iter_footprints(ds: Any, geoms: np.ndarray) -> Iterator[tuple[int, Window, np.ndarray]]:
    for pos, geom in enumerate(geoms):
        found = _footprint_window(ds, geom)
        if found is not None:
            yield pos, found[0], found[1]


def image_attributes(
    gdf: gpd.GeoDataFrame, raster_path: str | Path, bands: Sequence[int] = (1, 2, 3), threads: int = 1
) -> pd.DataFrame:
    """Colour and GLCM texture of the image inside each footprint (same index as ``gdf``).

    ``mean_*``/``std_*`` are in the raster's own units (0-255 for 8-bit) over the valid pixels inside the
    footprint (centre-in-polygon rule; a footprint covering no pixel centre takes the pixels it touches).
    Texture uses the Rec.601 luma of the three bands quantized to 32 levels (0-255 for 8-bit data, else the
    raster's 0.5-99.5 percentile luma range, one range for all footprints) and a symmetric GLCM at distance
    1 over 0/45/90/135 degrees built only from pairs of valid pixels inside the footprint; properties are
    averaged over angles, entropy in bits.
    Footprints with no valid pixel in the raster get NaN. ``threads``: blocks of a local raster measured at
    once (each thread reads through its own dataset handle; NumPy and GDAL release the GIL for most of it).
    """
    bands = tuple(int(b) for b in bands)
    out = pd.DataFrame(np.nan, index=gdf.index, columns=IMAGE_COLUMNS, dtype=float)
    raster_path = as_raster_path(raster_path)
    name = raster_path.name
    if len(bands) != 3:
        raise InputError(f"{name}: image attributes need 3 bands (R, G, B), got {bands}; pass three bands")
    with http_env(raster_path), _open_image(raster_path, name) as ds:
        if any(b < 1 or b > ds.count for b in bands):
            raise InputError(f"{name}: bands {bands} out of range (the raster has {ds.count}); choose others")
        if len(gdf) == 0:
            return out
        geoms = _in_crs(gdf, ds.crs, raster_path)
        lo, hi = grey_range(ds, bands)
        values = np.full((len(gdf), len(IMAGE_COLUMNS)), np.nan)
        blocks = iter_label_blocks(ds, geoms)
        if threads > 1 and not is_remote(raster_path):  # a rasterio.Env of the caller's thread stays there
            measured = _measure_blocks_in_threads(raster_path, name, bands, blocks, lo, hi, values, threads)
        else:
            measured = (_block_image_values(ds, bands, block, lo, hi, values) for block in blocks)
        missing = [pos for block in measured for pos in block.missing]
        for pos in missing:  # no pixel centre inside: the pixels it touches
            found = _footprint_window(ds, geoms[pos])
            if found is not None:
                values[pos] = _footprint_image_values(ds, bands, *found, lo, hi)
    out.loc[:, :] = values
    return out


def _measure_blocks_in_threads(
    raster_path: Path, name: str, bands: tuple[int, ...], blocks: Iterator[LabelBlock], lo: float, hi: float,
    values: np.ndarray, threads: int,
) -> list[LabelBlock]:
    """:func:`_block_image_values` of every block, ``threads`` blocks at a time (rows of ``values`` are the
    blocks' own footprints, so no two threads write the same row)."""
    local = threading.local()

    def measure(block: LabelBlock) -> LabelBlock:
        if not hasattr(local, "ds"):
            local.ds = _open_image(raster_path, name)
            handles.append(local.ds)
        return _block_image_values(local.ds, bands, block, lo, hi, values)

    handles: list[Any] = []
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="bldgseg-attributes") as pool:
            return list(pool.map(measure, blocks))
    finally:
        for handle in handles:
            handle.close()


def _block_image_values(
    ds: Any, bands: tuple[int, ...], block: LabelBlock, lo: float, hi: float, values: np.ndarray
) -> LabelBlock:
    """Colour and texture of every footprint of ``block`` into its row of ``values`` (IMAGE_COLUMNS order).

    Only the valid pixels inside footprints are converted and quantized (the GLCM pairs only pixels of one
    label, so the rest of the block never matters)."""
    data = ds.read(list(bands), window=block.window)
    valid = valid_pixels(ds.read_masks(list(bands), window=block.window), data)
    for labels, positions in block.layers:
        labels = np.where(valid, labels, 0)
        inside = np.flatnonzero(labels)
        label_of = labels.ravel()[inside]
        pixels = data.reshape(len(bands), -1)[:, inside].astype(np.float64)
        q = np.zeros(labels.shape, np.uint8)
        q.ravel()[inside] = quantize_grey(luma(pixels), lo, hi)
        n = len(positions)
        values[np.ix_(positions, _COLOUR)] = _label_colour_stats(pixels, label_of, n)
        values[np.ix_(positions, _TEXTURE)] = label_glcm_texture(q, labels, n)
    return block


def _label_colour_stats(pixels: np.ndarray, label_of: np.ndarray, count: int) -> np.ndarray:
    """``(count, 6)``: mean and (population) standard deviation of each band of ``pixels`` (bands x m) per
    label (``label_of``: 1..count per pixel); NaN without pixels. Two passes, as ``numpy.std`` does."""
    counts = np.bincount(label_of, minlength=count + 1).astype(np.float64)
    has = counts[1:] > 0
    out = np.full((count, 6), np.nan)
    for k, values in enumerate(pixels):
        mean = np.bincount(label_of, weights=values, minlength=count + 1) / np.maximum(counts, 1)
        squares = np.bincount(label_of, weights=(values - mean[label_of]) ** 2, minlength=count + 1)
        out[has, k] = mean[1:][has]
        out[has, 3 + k] = np.sqrt(squares[1:][has] / counts[1:][has])
    return out


def _footprint_image_values(
    ds: Any, bands: tuple[int, ...], win: Window, inside: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """Colour and texture (IMAGE_COLUMNS order) of one footprint's pixels ``inside`` its window."""
    row = np.full(len(IMAGE_COLUMNS), np.nan)
    data = ds.read(list(bands), window=win).astype(np.float64)
    sel = inside & valid_pixels(ds.read_masks(list(bands), window=win), data)
    if not sel.any():
        return row
    pix = data[:, sel]
    row[_COLOUR] = [*pix.mean(axis=1), *pix.std(axis=1)]
    texture = glcm_texture(luma(data), sel, lo, hi)
    row[_TEXTURE] = [texture.get(f"texture_{name}", np.nan) for name in TEXTURE_PROPERTIES]
    return row


def _open_image(path: Any, name: str) -> Any:
    try:
        return rasterio.open(gdal_path(path))
    except RasterioIOError as exc:
        raise InputError(f"{name}: cannot be opened as a raster ({exc}); check the path and file") from exc


# -------------------- height


def _open(path: str | Path, what: str) -> Any:
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{Path(path).name}: the {what} cannot be opened ({exc}); check the path") from exc
    if ds.crs is None:
        ds.close()
        raise InputError(f"{Path(path).name}: the {what} has no CRS; assign one (e.g. gdal_edit.py -a_srs)")
    return ds


def _band_values(ds: Any, window: Window) -> tuple[np.ndarray, np.ndarray]:
    data = ds.read(1, window=window).astype(np.float64)
    return data, valid_pixels(ds.read_masks(1, window=window), data)


def height_attributes(
    gdf: gpd.GeoDataFrame,
    ndsm: str | Path | None = None,
    dsm: str | Path | None = None,
    dtm: str | Path | None = None,
) -> pd.Series:
    """Median height above ground inside each footprint, ``height_m`` (same index as ``gdf``).

    From an nDSM, or from DSM - DTM on the DSM's grid (the DTM is warped bilinearly onto it when the grids
    differ). Nodata pixels are ignored; NaN when no raster is given or no valid pixel lies inside. The nDSM
    wins when both kinds are given. Raises ``InputError`` when only one of ``dsm``/``dtm`` is given.
    """
    out = pd.Series(np.nan, index=gdf.index, name="height_m", dtype=float)
    if (dsm is None) != (dtm is None):
        given, missing = ("DSM", "DTM") if dsm is not None else ("DTM", "DSM")
        path = dsm if dsm is not None else dtm
        raise InputError(
            f"{Path(str(path)).name}: a {given} was given without a {missing}; pass both a DSM and a DTM, "
            "or an nDSM instead"
        )
    if (ndsm is None and dsm is None) or len(gdf) == 0:
        return out
    values = np.full(len(gdf), np.nan)
    if ndsm is not None:
        with _open(ndsm, "nDSM") as ds:
            geoms = _in_crs(gdf, ds.crs, ndsm)
            for pos, win, inside in _iter_footprints(ds, geoms):
                data, valid = _band_values(ds, win)
                sel = inside & valid
                if sel.any():
                    values[pos] = float(np.median(data[sel]))
    else:
        with _open(dsm, "DSM") as sds, _open(dtm, "DTM") as tds:
            same = (
                CRS.from_user_input(tds.crs).equals(CRS.from_user_input(sds.crs))
                and tds.transform.almost_equals(sds.transform)
                and (tds.width, tds.height) == (sds.width, sds.height)
            )
            vrt = None
            if not same:
                vrt = WarpedVRT(
                    tds,
                    crs=sds.crs,
                    transform=sds.transform,
                    width=sds.width,
                    height=sds.height,
                    resampling=Resampling.bilinear,
                    src_nodata=tds.nodata,
                    nodata=np.nan,
                    dtype="float32",
                )
            ground = vrt if vrt is not None else tds
            try:
                geoms = _in_crs(gdf, sds.crs, dsm)
                for pos, win, inside in _iter_footprints(sds, geoms):
                    top, valid_top = _band_values(sds, win)
                    bottom, valid_bottom = _band_values(ground, win)
                    sel = inside & valid_top & valid_bottom
                    if sel.any():
                        values[pos] = float(np.median(top[sel] - bottom[sel]))
            finally:
                if vrt is not None:
                    vrt.close()
    out[:] = values
    return out
