"""Per-building attributes: metric shape measures, colour and texture, height.

Every length and area is measured in the UTM zone of the building's own centroid (UPS beyond 84 N / 80 S), so
continent-wide inputs stay accurate; nothing is ever measured in EPSG:3857 or in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.features import geometry_mask
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from skimage.feature import graycomatrix, graycoprops

from bldgseg.errors import InputError

__all__ = [
    "METRIC_EPSG_COLUMN",
    "SHAPE_COLUMNS",
    "IMAGE_COLUMNS",
    "utm_epsg",
    "to_metric",
    "from_metric",
    "shape_attributes",
    "image_attributes",
    "height_attributes",
]

METRIC_EPSG_COLUMN = "utm_epsg"
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

GLCM_LEVELS = 32
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
_LUMA = np.array([0.299, 0.587, 0.114])
_GEOD = Geod(ellps="WGS84")
_WGS84 = CRS.from_epsg(4326)


# -------------------- metric CRS


def utm_epsg(lon: np.ndarray | float, lat: np.ndarray | float) -> np.ndarray:
    """EPSG code of the UTM zone (326zz N, 327zz S) holding each lon/lat; UPS (32661/32761) near the poles.

    Non-finite positions get zone 31 N (their geometries are empty anyway).
    """
    lon = np.atleast_1d(np.asarray(lon, dtype=float))
    lat = np.atleast_1d(np.asarray(lat, dtype=float))
    ok = np.isfinite(lon) & np.isfinite(lat)
    lon_w = np.where(ok, ((lon + 180.0) % 360.0) - 180.0, 0.0)
    lat_w = np.where(ok, lat, 0.0)
    zone = np.clip(np.floor((lon_w + 180.0) / 6.0).astype(int) + 1, 1, 60)
    epsg = np.where(lat_w < 0, 32700, 32600) + zone
    epsg = np.where(lat_w > 84.0, 32661, epsg)
    epsg = np.where(lat_w < -80.0, 32761, epsg)
    return epsg.astype(int)


def _centroid_xy(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid coordinates, NaN for empty or missing geometries."""
    x = np.full(len(geoms), np.nan)
    y = np.full(len(geoms), np.nan)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if ok.any():
        cen = shapely.centroid(geoms[ok])
        x[ok], y[ok] = shapely.get_x(cen), shapely.get_y(cen)
    return x, y


def _require_crs(gdf: gpd.GeoDataFrame | gpd.GeoSeries) -> CRS:
    if gdf.crs is None:
        raise InputError("footprints: the GeoDataFrame has no CRS; set one with .set_crs() before measuring")
    return CRS.from_user_input(gdf.crs)


def to_metric(gdf: gpd.GeoDataFrame | gpd.GeoSeries) -> gpd.GeoDataFrame:
    """Each geometry reprojected into the UTM zone of its own centroid.

    Returns a GeoDataFrame with the same index, the metric ``geometry`` and a ``utm_epsg`` column (the zone's
    EPSG code, as ``from_metric`` needs it). Its ``.crs`` is that zone's CRS when all rows share one zone and
    ``None`` when several zones mix (the geometries are then in different CRSs; use ``utm_epsg`` per row).
    Raises ``InputError`` when ``gdf`` has no CRS.
    """
    crs = _require_crs(gdf)
    geoms = np.asarray(gdf.geometry.values if isinstance(gdf, gpd.GeoDataFrame) else gdf.values, dtype=object)
    if len(geoms) == 0:
        return gpd.GeoDataFrame(
            {METRIC_EPSG_COLUMN: pd.Series([], dtype=int)}, geometry=gpd.GeoSeries([]), index=gdf.index
        )
    cx, cy = _centroid_xy(geoms)
    if crs.is_geographic and crs.equals(_WGS84, ignore_axis_order=True):
        lon, lat = cx, cy
    else:
        lon, lat = Transformer.from_crs(crs, _WGS84, always_xy=True).transform(cx, cy)
    codes = utm_epsg(lon, lat)
    out = np.empty(len(geoms), dtype=object)
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        out[idx] = gpd.GeoSeries(geoms[idx], crs=crs).to_crs(epsg=int(code)).values
    single = len(np.unique(codes)) == 1
    return gpd.GeoDataFrame(
        {METRIC_EPSG_COLUMN: codes},
        geometry=gpd.GeoSeries(out, index=gdf.index),
        index=gdf.index,
        crs=CRS.from_epsg(int(codes[0])) if single else None,
    )


def from_metric(
    geoms: Sequence[Any] | gpd.GeoSeries | np.ndarray, epsg: Sequence[int] | np.ndarray, crs: Any
) -> gpd.GeoSeries:
    """Inverse of ``to_metric``: geometries in the EPSG codes ``epsg`` (one per row) back into ``crs``.

    The result keeps ``geoms``' index when it is a GeoSeries.
    """
    index = geoms.index if isinstance(geoms, gpd.GeoSeries) else None
    arr = np.asarray(geoms.values if isinstance(geoms, gpd.GeoSeries) else list(geoms), dtype=object)
    codes = np.asarray(epsg, dtype=int)
    out = np.empty(len(arr), dtype=object)
    target = CRS.from_user_input(crs)
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        out[idx] = gpd.GeoSeries(arr[idx], crs=int(code)).to_crs(target).values
    return gpd.GeoSeries(out, index=index, crs=target)


# -------------------- shape


def _to_lonlat(x: np.ndarray, y: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.full(len(x), np.nan)
    lat = np.full(len(x), np.nan)
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        tr = Transformer.from_crs(CRS.from_epsg(int(code)), _WGS84, always_xy=True)
        lon[idx], lat[idx] = tr.transform(x[idx], y[idx])
    return lon, lat


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

    lon0, lat0 = _to_lonlat(p0[:, 0], p0[:, 1], codes)
    lon1, lat1 = _to_lonlat(p1[:, 0], p1[:, 1], codes)
    has = np.isfinite(lon0) & np.isfinite(lon1) & (length > 0)
    orient = np.full(n, np.nan)
    if has.any():
        az, _, _ = _GEOD.inv(lon0[has], lat0[has], lon1[has], lat1[has])
        az = np.mod(np.asarray(az, dtype=float), 180.0)
        orient[has] = np.where(az >= 180.0, 0.0, az)

    cx, cy = _centroid_xy(geoms)
    clon, clat = _to_lonlat(cx, cy, codes)

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
    src_crs = _require_crs(gdf)
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


def _valid(ds: Any, bands: Sequence[int], window: Window, data: np.ndarray) -> np.ndarray:
    """Pixels valid in every band: GDAL masks (nodata, alpha, internal mask) and finite values."""
    masks = ds.read_masks(list(bands), window=window)
    return np.all(masks > 0, axis=0) & np.all(np.isfinite(data), axis=0)


def _grey_range(ds: Any, bands: Sequence[int]) -> tuple[float, float]:
    """Value range mapped onto the GLCM levels: 0-256 for 8-bit, else the raster's 0.5-99.5 % luma range.

    The range comes from a decimated read when the raster is small or has overviews, else from a grid of
    8 x 8 windows of 128 pixels, so it costs little on large rasters and is the same for every footprint.
    """
    if all(ds.dtypes[b - 1] == "uint8" for b in bands):
        return 0.0, 256.0
    side = 1024
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    if max(ds.width, ds.height) <= 4 * side or ds.overviews(bands[0]):
        f = max(1.0, max(ds.width, ds.height) / side)
        shape = (len(bands), max(1, int(ds.height / f)), max(1, int(ds.width / f)))
        data = ds.read(list(bands), out_shape=shape, resampling=Resampling.nearest)
        masks = ds.read_masks(list(bands), out_shape=shape, resampling=Resampling.nearest)
        samples.append((data, masks))
    else:
        h, w = min(128, ds.height), min(128, ds.width)
        for r in np.linspace(0, ds.height - h, 8).astype(int):
            for c in np.linspace(0, ds.width - w, 8).astype(int):
                win = Window(int(c), int(r), w, h)
                samples.append((ds.read(list(bands), window=win), ds.read_masks(list(bands), window=win)))
    greys = []
    for data, masks in samples:
        data = data.astype(np.float64)
        ok = np.all(masks > 0, axis=0) & np.all(np.isfinite(data), axis=0)
        greys.append(np.tensordot(_LUMA, data[:, ok], axes=1))
    grey = np.concatenate(greys)
    if grey.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(grey, [0.5, 99.5])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _texture(grey: np.ndarray, inside: np.ndarray, lo: float, hi: float) -> dict[str, float]:
    """GLCM properties of the grey pixels inside the footprint (pixels outside never form a pair)."""
    q = np.floor((grey - lo) / (hi - lo) * GLCM_LEVELS)
    q = np.clip(np.nan_to_num(q, nan=0.0), 0, GLCM_LEVELS - 1).astype(np.uint8)
    q[~inside] = GLCM_LEVELS
    glcm = graycomatrix(q, [1], _GLCM_ANGLES, levels=GLCM_LEVELS + 1, symmetric=True, normed=False)
    p = glcm[:GLCM_LEVELS, :GLCM_LEVELS].astype(np.float64)
    sums = p.sum(axis=(0, 1))  # (1, n_angles)
    keep = sums[0] > 0
    if not keep.any():
        return {}
    p = p[:, :, :, keep] / sums[:, keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=(0, 1))
    return {
        "texture_contrast": float(graycoprops(p, "contrast").mean()),
        "texture_homogeneity": float(graycoprops(p, "homogeneity").mean()),
        "texture_energy": float(graycoprops(p, "energy").mean()),
        "texture_correlation": float(graycoprops(p, "correlation").mean()),
        "texture_entropy": float(ent.mean()),
    }


def image_attributes(
    gdf: gpd.GeoDataFrame, raster_path: str | Path, bands: Sequence[int] = (1, 2, 3)
) -> pd.DataFrame:
    """Colour and GLCM texture of the image inside each footprint (same index as ``gdf``).

    ``mean_*``/``std_*`` are in the raster's own units (0-255 for 8-bit) over the valid pixels inside the
    footprint (centre-in-polygon rule; a footprint covering no pixel centre takes the pixels it touches).
    Texture uses the Rec.601 luma of the three bands quantized to 32 levels (0-255 for 8-bit data, else the
    raster's 0.5-99.5 percentile luma range, one range for all footprints) and a symmetric GLCM at distance
    1 over 0/45/90/135 degrees built only from pairs of valid pixels inside the footprint; properties are
    averaged over angles, entropy in bits.
    Footprints with no valid pixel in the raster get NaN.
    """
    bands = tuple(int(b) for b in bands)
    out = pd.DataFrame(np.nan, index=gdf.index, columns=IMAGE_COLUMNS, dtype=float)
    name = Path(raster_path).name
    if len(bands) != 3:
        raise InputError(f"{name}: image attributes need 3 bands (R, G, B), got {bands}; pass three bands")
    try:
        ds = rasterio.open(raster_path)
    except RasterioIOError as exc:
        raise InputError(f"{name}: cannot be opened as a raster ({exc}); check the path and file") from exc
    with ds:
        if any(b < 1 or b > ds.count for b in bands):
            raise InputError(f"{name}: bands {bands} out of range (the raster has {ds.count}); choose others")
        if len(gdf) == 0:
            return out
        geoms = _in_crs(gdf, ds.crs, raster_path)
        lo, hi = _grey_range(ds, bands)
        values = np.full((len(gdf), len(IMAGE_COLUMNS)), np.nan)
        col = {c: i for i, c in enumerate(IMAGE_COLUMNS)}
        for pos, win, inside in _iter_footprints(ds, geoms):
            data = ds.read(list(bands), window=win).astype(np.float64)
            sel = inside & _valid(ds, bands, win, data)
            if not sel.any():
                continue
            pix = data[:, sel]
            for k, c in enumerate("rgb"):
                values[pos, col[f"mean_{c}"]] = pix[k].mean()
                values[pos, col[f"std_{c}"]] = pix[k].std()
            grey = np.tensordot(_LUMA, data, axes=1)
            for key, v in _texture(grey, sel, lo, hi).items():
                values[pos, col[key]] = v
    out.loc[:, :] = values
    return out


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
    valid = (ds.read_masks(1, window=window) > 0) & np.isfinite(data)
    return data, valid


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
