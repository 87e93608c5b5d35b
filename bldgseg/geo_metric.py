"""Local metric CRSs: the UTM zone of a position, geometries to and from it, grid scale and convergence.

Lengths and areas are measured in the UTM zone of each geometry's own centroid (UPS beyond 84 N / 80 S), so
continent-wide inputs stay accurate; nothing is ever measured in EPSG:3857 or in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Geod, Transformer

from bldgseg.errors import InputError

__all__ = [
    "GEOD",
    "METRIC_EPSG_COLUMN",
    "WGS84",
    "centroid_xy",
    "from_metric",
    "grid_factors",
    "require_crs",
    "to_lonlat",
    "to_metric",
    "utm_epsg",
    "utm_epsg_at",
]

#: Column of :func:`to_metric`'s result holding each row's EPSG code.
METRIC_EPSG_COLUMN = "utm_epsg"
WGS84 = CRS.from_epsg(4326)
#: Geodesic computations on the WGS84 ellipsoid.
GEOD = Geod(ellps="WGS84")


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


def utm_epsg_at(x: float, y: float, crs: Any) -> int:
    """EPSG code of the UTM zone holding the point (``x``, ``y``) given in ``crs``."""
    source = CRS.from_user_input(crs)
    if source.is_geographic and source.equals(WGS84, ignore_axis_order=True):
        lon, lat = x, y
    else:
        lon, lat = Transformer.from_crs(source, WGS84, always_xy=True).transform(x, y)
    return int(utm_epsg(lon, lat)[0])


def centroid_xy(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid coordinates, NaN for empty or missing geometries."""
    x = np.full(len(geoms), np.nan)
    y = np.full(len(geoms), np.nan)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if ok.any():
        cen = shapely.centroid(geoms[ok])
        x[ok], y[ok] = shapely.get_x(cen), shapely.get_y(cen)
    return x, y


def require_crs(gdf: gpd.GeoDataFrame | gpd.GeoSeries) -> CRS:
    """The CRS of ``gdf``; ``InputError`` when it has none."""
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
    crs = require_crs(gdf)
    geoms = np.asarray(gdf.geometry.values if isinstance(gdf, gpd.GeoDataFrame) else gdf.values, dtype=object)
    if len(geoms) == 0:
        return gpd.GeoDataFrame(
            {METRIC_EPSG_COLUMN: pd.Series([], dtype=int)}, geometry=gpd.GeoSeries([]), index=gdf.index
        )
    cx, cy = centroid_xy(geoms)
    if crs.is_geographic and crs.equals(WGS84, ignore_axis_order=True):
        lon, lat = cx, cy
    else:
        lon, lat = Transformer.from_crs(crs, WGS84, always_xy=True).transform(cx, cy)
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


def to_lonlat(x: np.ndarray, y: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 lon/lat of points whose coordinates are in the EPSG codes ``codes`` (one per point)."""
    lon = np.full(len(x), np.nan)
    lat = np.full(len(x), np.nan)
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        tr = Transformer.from_crs(CRS.from_epsg(int(code)), WGS84, always_xy=True)
        lon[idx], lat[idx] = tr.transform(x[idx], y[idx])
    return lon, lat


def grid_factors(to_grid: Transformer, lon: float, lat: float) -> tuple[float, float, float, float]:
    """Grid position (x, y), scale factor and grid bearing of true north (degrees) at ``lon``/``lat``.

    ``to_grid`` maps WGS84 lon/lat (``always_xy``) to the metric grid.
    """
    x, y = to_grid.transform(lon, lat)
    dlat = 1e-5 if lat < 89.0 else -1e-5
    x2, y2 = to_grid.transform(lon, lat + dlat)
    _, _, metres = GEOD.inv(lon, lat, lon, lat + dlat)
    convergence = math.degrees(math.atan2(x2 - x, y2 - y)) + (180.0 if dlat < 0 else 0.0)
    return float(x), float(y), math.hypot(x2 - x, y2 - y) / metres, convergence
