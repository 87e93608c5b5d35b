"""The user's region for ``bldgseg adapt``: images and footprints read, checked and refused with one line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import CRS

from bldgseg.errors import InputError
from bldgseg.footprints import read_footprints
from bldgseg.io import RasterInfo, scan_inputs
from bldgseg.train.resample import bounds_4326

__all__ = [
    "Region",
    "building_rows",
    "describe_extent",
    "polygon_layer",
    "read_region",
    "scan_images",
]

#: Geometry types pyogrio reports for polygon layers.
_POLYGON_LAYER_TYPES = (
    "Polygon",
    "MultiPolygon",
    "Polygon Z",
    "MultiPolygon Z",
    "CurvePolygon",
    "MultiSurface",
)


@dataclass
class Region:
    """The images, the footprints on them (in their own CRS) and the region's lon/lat box."""

    infos: list[RasterInfo]
    footprints: gpd.GeoDataFrame
    layer: str | None
    inside: int
    bbox_lonlat: tuple[float, float, float, float]


def scan_images(images: Sequence[str | os.PathLike[str]], glob: str, bands) -> list[RasterInfo]:
    """Every image, validated; one that cannot be used (no CRS, unreadable…) is refused, not skipped."""
    infos, skipped = scan_inputs(list(images), glob, bands)
    if skipped:
        more = f" ({len(skipped)} images in all)" if len(skipped) > 1 else ""
        raise InputError(f"{skipped[0].reason}{more}; adapt uses every image given: fix it or leave it out")
    if not infos:
        raise InputError("no images found; give GeoTIFFs (or folders of them) of your region")
    return infos


def polygon_layer(path: Path, layer: str | None) -> str | None:
    """The footprint layer to read: ``layer``; else ``buildings``; else the only polygon layer."""
    if layer is not None or path.is_dir():
        return layer
    try:
        layers = [(str(name), str(kind)) for name, kind in pyogrio.list_layers(path)]
    except pyogrio.errors.DataSourceError:
        return None  # read_footprints says what is wrong with the file
    polygons = [name for name, kind in layers if kind in _POLYGON_LAYER_TYPES]
    if "buildings" in polygons or len(polygons) == 1:
        return "buildings" if "buildings" in polygons else polygons[0]
    if not polygons:
        return None if len(layers) <= 1 else layers[0][0]
    raise InputError(
        f"{path.name}: several polygon layers ({', '.join(polygons)}); choose one with --footprints-layer"
    )


def building_rows(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """OpenStreetMap extracts hold every kind of area: keep those tagged ``building`` (other files: all rows)."""
    if "building" not in gdf.columns:
        return gdf
    tag = gdf["building"].astype("string").str.strip().str.lower()
    tagged = tag.notna() & (tag != "") & (tag != "no")
    return gdf[tagged.to_numpy()] if tagged.any() else gdf


def describe_extent(bounds: tuple[float, float, float, float], crs) -> str:
    """``EPSG:3857, lon 32.5895..32.5958, lat 0.3481..0.3516``: a CRS and a lon/lat box, for messages."""
    name = CRS.from_user_input(crs).to_string()
    return f"{name}, lon {bounds[0]:.4f}..{bounds[2]:.4f}, lat {bounds[1]:.4f}..{bounds[3]:.4f}"


def _union_bounds(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    array = np.asarray(boxes, dtype=float)
    return (array[:, 0].min(), array[:, 1].min(), array[:, 2].max(), array[:, 3].max())


def _footprints_inside(gdf: gpd.GeoDataFrame, infos: list[RasterInfo]) -> np.ndarray:
    """Whether each footprint intersects an image (each image's extent in its own CRS)."""
    inside = np.zeros(len(gdf), dtype=bool)
    by_crs: dict[str, np.ndarray] = {}
    for info in infos:
        key = info.crs.to_wkt()
        if key not in by_crs:
            by_crs[key] = np.asarray(gdf.to_crs(info.crs).geometry.values, dtype=object)
        left, top = info.transform * (0, 0)
        right, bottom = info.transform * (info.width, info.height)
        extent = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        inside |= shapely.intersects(by_crs[key], extent)
    return inside


def read_region(
    images: Sequence[str | os.PathLike[str]],
    footprints: str | os.PathLike[str],
    layer: str | None,
    min_buildings: int,
    glob: str,
    bands=None,
) -> Region:
    """Images and footprints, refused when they do not overlap or hold fewer than ``min_buildings`` buildings."""
    infos = scan_images(images, glob, bands)
    path = Path(footprints).expanduser()
    chosen = polygon_layer(path, layer)
    gdf = building_rows(read_footprints(path, chosen, option="--footprints-layer", repair=True))
    image_boxes = [bounds_4326(i.crs, i.transform, i.height, i.width) for i in infos]
    bbox = _union_bounds(image_boxes)
    inside = _footprints_inside(gdf, infos)
    if not inside.any():
        raise InputError(
            f"{path.name}: none of its {len(gdf)} footprints overlaps the {len(infos)} image(s); footprints "
            f"{describe_extent(tuple(gdf.to_crs('EPSG:4326').total_bounds), gdf.crs)}; images "
            f"{describe_extent(bbox, infos[0].crs)}; give footprints of the same place"
        )
    if inside.sum() < min_buildings:
        raise InputError(
            f"{path.name}: only {int(inside.sum())} footprints lie on the images; adapt needs at least "
            f"{min_buildings} buildings to learn from: label more of them or add images"
        )
    return Region(infos, gdf[inside].reset_index(drop=True), chosen, int(inside.sum()), bbox)
