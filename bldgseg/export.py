"""Atomic output writers: GeoPackages with QGIS styles, Cloud-Optimized GeoTIFFs, buildings in any output format.

Every writer builds its output through :func:`bldgseg.files.atomic_write`: the destination is either untouched
or complete, never half-written.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
from affine import Affine
from rasterio.crs import CRS

from bldgseg.files import GPKG_SIDECARS, atomic_write, refuse_existing
from bldgseg.qgis_styles import building_style, style_for_columns
from bldgseg.vector_formats import output_format, write_frame

__all__ = [
    "EMPTY_LAYER_GEOMETRY_TYPE",
    "ERROR_COLUMNS",
    "GPKG_VERSION",
    "check_frames",
    "default_building_style",
    "errors_table",
    "read_layer",
    "write_buildings",
    "write_cog",
    "write_gpkg",
    "write_styles",
]

#: GeoPackage version written. 1.2 is read without warnings by every GDAL/QGIS still in use (GDAL < 3.7, e.g.
#: QGIS 3.22 on Debian 12, warns that 1.4 files "may only be partially supported").
GPKG_VERSION = "1.2"

#: Declared geometry type of an empty layer (no geometry to infer it from); override per layer with
#: ``gdf.attrs["geometry_type"] = "MultiPolygon"`` (any pyogrio geometry type name).
EMPTY_LAYER_GEOMETRY_TYPE = "Polygon"

#: Columns of the ``errors`` table every command writes: the file, the one-line reason, the stage, the unit.
ERROR_COLUMNS = ["path", "reason", "stage", "unit"]

_RESERVED_PREFIXES = ("gpkg_", "rtree_", "sqlite_")
_RESERVED_NAMES = {"layer_styles"}

# The table QGIS creates when it saves a style into a GeoPackage (same columns, types and default).
_LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS "layer_styles" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "f_table_catalog" TEXT(256),
    "f_table_schema" TEXT(256),
    "f_table_name" TEXT(256),
    "f_geometry_column" TEXT(256),
    "styleName" TEXT(30),
    "styleQML" TEXT,
    "styleSLD" TEXT,
    "useAsDefault" BOOLEAN,
    "description" TEXT,
    "owner" TEXT(30),
    "ui" TEXT(30),
    "update_time" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)
"""
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"


def default_building_style(geometry_column: str = "geom") -> str:
    """QGIS 3 QML for a ``buildings`` layer from ``bldgseg run``: graduated by ``confidence`` (see
    :func:`bldgseg.qgis_styles.building_style`), no labels.

    A QML does not name the geometry column, so the text is the same for any ``geometry_column``; the
    column is recorded next to the style in ``layer_styles.f_geometry_column`` by :func:`write_gpkg`.
    """
    if not geometry_column:
        raise ValueError("geometry_column must be a non-empty column name")
    return building_style()


def write_gpkg(
    path: str | os.PathLike[str],
    layers: Mapping[str, gpd.GeoDataFrame],
    tables: Mapping[str, pd.DataFrame] | None = None,
    overwrite: bool = False,
    styles: Mapping[str, str] | None = None,
) -> Path:
    """Write spatial ``layers`` and attribute-only ``tables`` into one GeoPackage, atomically.

    ``styles`` maps layer names to QML stored as each layer's default QGIS style in ``layer_styles``;
    ``None`` gives ``buildings`` (when present) the style for its columns (:func:`default_building_style`
    with a ``confidence`` column, else the plain footprint style), ``{}`` stores none.
    Empty layers keep their columns and are declared ``Polygon`` (see ``EMPTY_LAYER_GEOMETRY_TYPE``);
    mixed Polygon/MultiPolygon layers are written as MultiPolygon. The DataFrame index is not written.
    Missing parent folders are created. Raises ``OutputExistsError`` when ``path`` exists and not
    ``overwrite``, ``ValueError`` for bad layer names or a style for an unknown layer.
    """
    dest = Path(path)
    tables = dict(tables or {})
    frames = check_frames(layers, tables)
    if styles is None:
        styles = {"buildings": style_for_columns(layers["buildings"].columns)} if "buildings" in layers else {}
    unknown = sorted(set(styles) - set(layers))
    if unknown:
        raise ValueError(f"styles given for {unknown}, which are not spatial layers being written")
    refuse_existing(dest, overwrite, label=dest.name, file=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest, ".gpkg", overwrite=overwrite, sidecars=GPKG_SIDECARS) as tmp:
        for i, (name, frame) in enumerate(frames):
            kwargs: dict = {"driver": "GPKG", "layer": name}
            if i == 0:
                kwargs["dataset_options"] = {"VERSION": GPKG_VERSION}
            else:
                kwargs["append"] = False  # a new layer in the existing file
            if isinstance(frame, gpd.GeoDataFrame) and not frame.geometry.notna().any():
                kwargs["geometry_type"] = frame.attrs.get("geometry_type", EMPTY_LAYER_GEOMETRY_TYPE)
            pyogrio.write_dataframe(frame, tmp, **kwargs)
        if styles:
            write_styles(tmp, styles)
    return dest


def write_buildings(
    path: str | os.PathLike[str],
    buildings: gpd.GeoDataFrame,
    tables: Mapping[str, pd.DataFrame] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a ``buildings`` layer and attribute-only ``tables`` in the format ``path``'s extension names.

    A GeoPackage is written by :func:`write_gpkg` (default style); GeoParquet and FlatGeobuf keep the tables
    as metadata and sidecars (:mod:`bldgseg.vector_formats`; no QGIS style). Same checks and overwrite rule.
    """
    if output_format(path) == "gpkg":
        return write_gpkg(path, {"buildings": buildings}, tables, overwrite=overwrite)
    tables = dict(tables or {})
    check_frames({"buildings": buildings}, tables)
    return write_frame(Path(path), buildings, tables, overwrite=overwrite)


def write_cog(
    path: str | os.PathLike[str],
    array: np.ndarray,
    transform: Affine,
    crs: CRS | str | int | object,
    nodata: float | int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 2-D (one band) or 3-D (bands, rows, cols) array as a Cloud-Optimized GeoTIFF, atomically.

    512-pixel tiles, DEFLATE, floating-point predictor for float arrays, internal overviews down to one
    tile (averaged for floats, nearest for integers so masks stay crisp). Booleans are stored as uint8.
    ``crs`` is anything ``rasterio.crs.CRS.from_user_input`` accepts; same overwrite rule as
    :func:`write_gpkg`.
    """
    dest = Path(path)
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3 or 0 in data.shape:
        raise ValueError(f"{dest.name}: expected a non-empty 2-D or 3-D array, got shape {np.shape(array)}")
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    is_float = np.issubdtype(data.dtype, np.floating)
    profile = {
        "driver": "COG",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "crs": CRS.from_user_input(crs),
        "transform": transform,
        "nodata": nodata,
        "compress": "DEFLATE",
        "blocksize": 512,
        "overviews": "AUTO",
        "resampling": "AVERAGE" if is_float else "NEAREST",
        "bigtiff": "IF_SAFER",
    }
    if is_float:
        profile["predictor"] = "YES"  # the COG driver picks 3 (floating point) for float data
    refuse_existing(dest, overwrite, label=dest.name, file=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_write(dest, ".tif", overwrite=overwrite, sidecars=(".aux.xml", ".ovr", ".ovr.tmp")) as tmp,
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        dst.write(data)
    return dest


def errors_table(rows: Iterable[tuple[object, str, str, str]]) -> pd.DataFrame:
    """The ``errors`` table of an output: one ``(path, reason, stage, unit)`` row per input or unit left out."""
    records = [(str(path), reason, stage, unit) for path, reason, stage, unit in rows]
    return pd.DataFrame(records, columns=ERROR_COLUMNS, dtype="string")


def read_layer(path: str | os.PathLike[str], layer: str) -> gpd.GeoDataFrame | pd.DataFrame:
    """One layer of a vector file: a GeoDataFrame, or a plain DataFrame for an attribute-only table."""
    return pyogrio.read_dataframe(path, layer=layer)


def check_frames(
    layers: Mapping[str, gpd.GeoDataFrame], tables: Mapping[str, pd.DataFrame]
) -> list[tuple[str, pd.DataFrame]]:
    """Validate layer names and types (``ValueError`` / ``TypeError``); spatial layers first, then tables."""
    frames: list[tuple[str, pd.DataFrame]] = []
    for name, frame in layers.items():
        if not isinstance(frame, gpd.GeoDataFrame):
            raise TypeError(f"layer {name!r}: expected a GeoDataFrame, got {type(frame).__name__}")
        frames.append((name, frame))
    for name, frame in tables.items():
        if isinstance(frame, gpd.GeoDataFrame) or not isinstance(frame, pd.DataFrame):
            kind = type(frame).__name__
            raise TypeError(f"table {name!r}: expected a DataFrame without geometry, got {kind}")
        frames.append((name, frame))
    if not frames:
        raise ValueError("nothing to write: give at least one layer or table")
    seen: set[str] = set()
    for name, _ in frames:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"layer names must be non-empty strings, got {name!r}")
        low = name.lower()
        if low in _RESERVED_NAMES or low.startswith(_RESERVED_PREFIXES):
            raise ValueError(f"layer name {name!r} is reserved by GeoPackage/QGIS")
        if low in seen:  # SQLite table names are case-insensitive
            raise ValueError(f"layer name {name!r} is used twice (names are case-insensitive)")
        seen.add(low)
    return frames


def write_styles(gpkg: Path, styles: Mapping[str, str]) -> None:
    """Store each QML as its layer's default style in ``layer_styles``, registered in ``gpkg_contents``."""
    con = sqlite3.connect(gpkg)
    try:
        with con:
            con.execute(_LAYER_STYLES_DDL)
            con.execute(
                "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, "
                f"last_change, srs_id) VALUES ('layer_styles', 'attributes', 'layer_styles', '', {_NOW}, 0)"
            )
            for name, qml in styles.items():
                row = con.execute(
                    "SELECT column_name FROM gpkg_geometry_columns WHERE lower(table_name) = lower(?)",
                    (name,),
                ).fetchone()
                if row is None:
                    raise ValueError(f"layer {name!r} has no geometry column; styles are for spatial layers")
                con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (name,))
                con.execute(
                    "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name,"
                    " f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner, ui,"
                    " update_time)"
                    f" VALUES ('', '', ?, ?, ?, ?, '', 1, 'bldgseg default style', '', NULL, {_NOW})",
                    (name, row[0], name, qml),
                )
    finally:
        con.close()
