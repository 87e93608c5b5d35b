"""Reading the inputs of an evaluation: footprint layers, mask rasters, images and their valid pixels."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.errors import RasterioError
from shapely.geometry import Polygon

from bldgseg.enrich import read_mask_file
from bldgseg.errors import InputError
from bldgseg.footprints import choose_layer, read_footprints, spatial_layers
from bldgseg.io import RasterInfo, discover_inputs, open_raster_info, valid_pixels
from bldgseg.vectorize import mask_to_polygons

__all__ = [
    "VECTOR_SUFFIXES",
    "PathLike",
    "find_sources",
    "image_info",
    "image_paths_from_key",
    "image_valid",
    "mask_valid",
    "paired_image",
    "raster_extent",
    "read_vectors",
    "run_min_area",
    "same_crs",
    "source_image",
    "to_paths",
    "truth_from_masks",
]

PathLike = str | os.PathLike[str]

#: Footprint files looked for in a folder that holds no raster.
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite", ".parquet")


def raster_extent(transform: Affine, width: int, height: int) -> Polygon:
    """The outline of a ``width`` x ``height`` pixel grid in its CRS."""
    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    return Polygon([transform @ c for c in corners])


def to_paths(value: PathLike | Sequence[PathLike]) -> list[Path]:
    """One path or several, as a list of ``Path``."""
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def find_sources(paths: list[Path], what: str) -> tuple[str, list[Path]]:
    """``("vector", footprint files)`` or ``("raster", rasters)``: files by content; folders searched for
    rasters (``*.tif*``, ``*.vrt`` ...) and, holding none, for footprint files (``*.gpkg``, ``*.geojson`` ...)."""
    vectors: list[Path] = []
    rasters: list[Path] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder; check the {what} path")
        if path.is_dir():
            found = discover_inputs(path)
            rasters += found
            if not found:
                vectors += [
                    p
                    for p in sorted(path.rglob("*"))
                    if p.is_file() and p.suffix.lower() in VECTOR_SUFFIXES and spatial_layers(p)
                ]
        elif spatial_layers(path):
            vectors.append(path)
        else:
            rasters.append(path)
    if vectors and rasters:
        raise InputError(f"{vectors[0].name}: the {what} mix footprint files and rasters; give one kind")
    if not vectors and not rasters:
        raise InputError(f"{paths[0]}: no {what} found (no rasters, no footprint files); check the path")
    return ("vector", vectors) if vectors else ("raster", sorted(set(rasters)))


def read_vectors(
    files: list[Path], layer: str | None, option: str, strict: bool
) -> tuple[gpd.GeoDataFrame, str]:
    """Footprints of all files (layer picked per file) in their common CRS, else WGS84; and the layer names."""
    frames: list[gpd.GeoDataFrame] = []
    names: list[str] = []
    for path in files:
        name = choose_layer(path, layer, option, strict)
        frames.append(read_footprints(path, name, option=option, allow_empty=True))
        names.append(str(name))
    crs = _common_crs([f.crs for f in frames])
    merged = pd.concat([f.to_crs(crs) for f in frames], ignore_index=True)
    return gpd.GeoDataFrame(merged, geometry=frames[0].geometry.name, crs=crs), ", ".join(sorted(set(names)))


def _common_crs(crss: Sequence[Any]) -> Any:
    """The CRS shared by all, else WGS84 (so footprints from far-apart files are never forced into one UTM zone)."""
    first = CRS.from_user_input(crss[0])
    return crss[0] if all(first.equals(CRS.from_user_input(c)) for c in crss[1:]) else CRS.from_epsg(4326)


def mask_valid(path: Path) -> np.ndarray:
    """Pixels of a mask raster's first band that are not nodata."""
    with rasterio.open(path) as ds:
        return valid_pixels(ds.read_masks(1))


def truth_from_masks(paths: list[Path], threshold: float) -> tuple[gpd.GeoDataFrame, gpd.GeoSeries]:
    """Truth polygons vectorized from mask rasters, and the rasters' extents (what the truth covers)."""
    frames: list[gpd.GeoDataFrame] = []
    extents: list[gpd.GeoSeries] = []
    for path in paths:
        mask, _prob, transform, crs = read_mask_file(path, threshold)
        frames.append(mask_to_polygons(mask, transform, crs)[["geometry"]])
        extents.append(gpd.GeoSeries([raster_extent(transform, mask.shape[1], mask.shape[0])], crs=crs))
    crs = _common_crs([f.crs for f in frames])
    truth = gpd.GeoDataFrame(pd.concat([f.to_crs(crs) for f in frames], ignore_index=True), crs=crs)
    coverage = gpd.GeoSeries(pd.concat([e.to_crs(crs) for e in extents], ignore_index=True), crs=crs)
    return truth, coverage


def image_info(path: Path) -> RasterInfo:
    """Validated imagery; fewer than 3 bands are read as grey (band 1 three times)."""
    try:
        return open_raster_info(path)
    except InputError as first:
        try:
            return open_raster_info(path, bands=(1, 1, 1))
        except InputError:
            raise first from None


def image_valid(info: RasterInfo) -> np.ndarray:
    """Pixels valid in the three image bands (nodata, alpha, internal masks; finite values for floats), as
    ``read_rgb`` defines them, read one band at a time."""
    valid = np.ones((info.height, info.width), dtype=bool)
    try:
        with rasterio.open(info.path) as ds:
            for band in sorted(set(info.bands)):
                is_float = np.dtype(ds.dtypes[band - 1]).kind == "f"
                valid &= valid_pixels(ds.read_masks(band), ds.read(band) if is_float else None)
    except RasterioError as exc:
        raise InputError(
            f"{info.path.name}: cannot be read ({exc}); check the file with gdalinfo -checksum"
        ) from exc
    return valid


def same_crs(a: Any, b: Any) -> bool:
    """Whether two CRS definitions (any form pyproj reads) are the same CRS."""
    return CRS.from_user_input(a).equals(CRS.from_user_input(b))


def paired_image(mask: Path, images: Sequence[Path]) -> Path | None:
    """The image whose stem starts the mask's name (``a.tif`` for ``a.mask.tif``, ``a.probability.tif``)."""
    stem = Path(mask.name).stem.lower()
    best: Path | None = None
    for image in images:
        key = Path(image.name).stem.lower()
        hit = stem == key or any(stem.startswith(key + sep) for sep in "._-")
        if hit and (best is None or len(key) > len(Path(best.name).stem)):
            best = image
    return best


def source_image(value: str, images: Sequence[Path]) -> Path | None:
    """The image a ``source_image`` value names: the same file, else the same file name, else the image whose
    stem starts the value's name (a mask ``a.mask.tif`` vectorized by ``bldgseg vectorize`` -> ``a.tif``)."""
    resolved = Path(value).resolve()
    for image in images:
        if image.resolve() == resolved:
            return image
    name = Path(value).name
    for image in images:
        if image.name == name:
            return image
    return paired_image(Path(value), images)


def image_paths_from_key(pred: gpd.GeoDataFrame, pred_files: list[Path], key: str) -> list[Path]:
    """The images named in column ``key``: as written, or relative to a prediction file's folder."""
    values = sorted({v for v in pred[key].fillna("").astype(str) if v})
    found: list[Path] = []
    for value in values:
        path = Path(value)
        if not path.exists() and not path.is_absolute():
            path = next((f.parent / value for f in pred_files if (f.parent / value).exists()), path)
        if not path.exists():
            raise InputError(
                f"{pred_files[0].name}: source image {value!r} (column {key!r}) not found; "
                "pass the images with --images"
            )
        found.append(path.resolve())
    return sorted(set(found))


def run_min_area(files: Sequence[Path]) -> tuple[float | None, str]:
    """The minimum building area a ``bldgseg run`` output was made with, and where it comes from.

    From the first file with a ``runs`` table: its model card's ``min_area_m2`` when the card has one
    (``"model card <name>"``), else the run's resolved ``min_area_m2`` parameter (``"run"``); ``(None, "")`` when
    no file says.
    """
    for path in files:
        try:
            if "runs" not in {str(name) for name, _ in pyogrio.list_layers(path)}:
                continue
            runs = pyogrio.read_dataframe(path, layer="runs", read_geometry=False)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError):
            continue
        if runs.empty:
            continue
        row = runs.iloc[0]
        card = _json_dict(row.get("model_card"))
        if card.get("min_area_m2") is not None:
            return float(card["min_area_m2"]), f"model card {card.get('name', row.get('model', ''))}"
        params = _json_dict(row.get("parameters"))
        if params.get("min_area_m2") is not None:
            return float(params["min_area_m2"]), "run"
    return None, ""


def _json_dict(text: Any) -> dict[str, Any]:
    """A JSON object stored as text in a table cell, ``{}`` when missing or not an object."""
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
