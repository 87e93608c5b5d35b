"""Reading building footprints (polygons with a CRS) from any OGR vector source or GeoParquet, with one set of
messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from bldgseg.errors import InputError, one_line
from bldgseg.geoparquet import require_pyarrow

__all__ = ["POLYGON_TYPES", "choose_layer", "polygonal_part", "read_footprints", "spatial_layers"]

POLYGON_TYPES = ("Polygon", "MultiPolygon")


def spatial_layers(path: str | os.PathLike[str]) -> list[str]:
    """Names of the layers of ``path`` that have geometries; [] when it is not a vector dataset."""
    path = Path(path)
    if path.is_dir():
        return []
    if _geoparquet_without_gdal(path):
        return [path.stem]  # one layer, named as GDAL's Parquet driver names it
    try:
        layers = pyogrio.list_layers(path)
    except pyogrio.errors.DataSourceError:
        return []
    return [str(name) for name, geometry_type in layers if geometry_type is not None]


def choose_layer(
    path: str | os.PathLike[str],
    layer: str | int | None = None,
    option: str = "--layer",
    strict: bool = True,
    several: Literal["error", "first"] = "error",
) -> str | int | None:
    """The layer of ``path`` to read: ``layer`` when it exists, else the only spatial layer, else ``buildings``.

    A ``layer`` the file lacks raises ``InputError`` when ``strict`` (else the automatic choice is made).
    Several spatial layers of which none is called ``buildings`` raise too, or (``several="first"``) give the
    first. ``option`` is the flag named in messages. A layer number is passed through; a source without
    spatial layers gives ``layer`` (``None``: the first).
    """
    if isinstance(layer, int):
        return layer
    path = Path(path)
    layers = spatial_layers(path)
    if layer is not None and (layer in layers or not layers):
        return layer
    if layer is not None and strict:
        raise InputError(f"{path.name}: no layer {layer!r} (layers: {', '.join(layers)}); pass another {option}")
    if len(layers) <= 1:
        return layers[0] if layers else None
    if "buildings" in layers:
        return "buildings"
    if several == "first":
        return layers[0]
    raise InputError(f"{path.name}: several layers ({', '.join(layers)}); choose one with {option}")


def read_footprints(
    path: str | os.PathLike[str],
    layer: str | int | None = None,
    *,
    option: str = "--layer",
    several: Literal["error", "first"] = "error",
    repair: bool = False,
    allow_empty: bool = False,
    fid_as_index: bool = False,
) -> gpd.GeoDataFrame:
    """Polygon footprints of one layer (see :func:`choose_layer` for ``several``) with their attributes and CRS.

    Rows without a polygon are dropped; with ``repair`` invalid geometries are made valid first and the
    polygonal parts of geometry collections kept. The index is a fresh RangeIndex, or the feature ids with
    ``fid_as_index``. Raises ``InputError`` (``option`` names the layer flag) when the file is missing or
    unreadable, has no CRS, or holds no polygon (an empty layer is accepted with ``allow_empty``).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: footprint file not found; check the path")
    chosen = choose_layer(path, layer, option, several=several)
    if _geoparquet_without_gdal(path):
        gdf = _read_geoparquet(path, option)
    else:
        try:
            gdf = pyogrio.read_dataframe(path, layer=chosen, fid_as_index=fid_as_index)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            raise InputError(
                f"{path.name}: cannot read footprints ({one_line(exc)}); check the file and {option}"
            ) from exc
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise InputError(f"{path.name}: layer {chosen!r} has no geometries; give a polygon layer with {option}")
    if gdf.crs is None:
        raise InputError(
            f"{path.name}: footprints have no coordinate reference system; "
            f"assign one with `ogr2ogr -a_srs EPSG:<code> fixed.gpkg {path}`"
        )
    rows = len(gdf)
    gdf = _polygon_rows(gdf, repair)
    if gdf.empty and (rows or not allow_empty):
        raise InputError(f"{path.name}: no polygon footprints found; give a polygon layer ({option})")
    return gdf if fid_as_index else gdf.reset_index(drop=True)


def _geoparquet_without_gdal(path: Path) -> bool:
    """A ``.parquet`` file that this GDAL cannot read (no Parquet driver): geopandas reads it instead."""
    return path.suffix.lower() == ".parquet" and "Parquet" not in pyogrio.list_drivers()


def _read_geoparquet(path: Path, option: str) -> gpd.GeoDataFrame:
    """A GeoParquet file through geopandas (pyarrow needed)."""
    require_pyarrow(path.name, reading=True)
    try:
        return gpd.read_parquet(path)
    except (OSError, ValueError) as exc:  # not Parquet, no "geo" metadata...
        raise InputError(
            f"{path.name}: cannot read footprints ({one_line(exc)}); check the file and {option}"
        ) from exc


def _polygon_rows(gdf: gpd.GeoDataFrame, repair: bool) -> gpd.GeoDataFrame:
    """The rows of ``gdf`` that hold a (Multi)Polygon, repaired first with ``repair``."""
    if not repair:
        return gdf[gdf.geometry.notna() & gdf.geom_type.isin(POLYGON_TYPES)]
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    fixed = geoms[present]
    invalid = ~shapely.is_valid(fixed)
    if invalid.any():
        fixed[invalid] = shapely.make_valid(fixed[invalid])
    parts = np.array([polygonal_part(g) for g in fixed], dtype=object)
    out = gdf[present].copy()
    out[gdf.geometry.name] = gpd.GeoSeries(parts, index=out.index, crs=gdf.crs)
    return out[~shapely.is_empty(parts)] if len(parts) else out


def polygonal_part(geom: Any) -> Any:
    """``geom`` when it is a (Multi)Polygon, the union of a collection's polygons, else an empty Polygon."""
    if geom.geom_type in POLYGON_TYPES:
        return geom
    if geom.geom_type == "GeometryCollection":
        polys = [g for g in shapely.get_parts(geom) if g.geom_type in POLYGON_TYPES]
        return shapely.union_all(polys) if polys else shapely.Polygon()
    return shapely.Polygon()
