"""Per-image units of an evaluation: each image's pixel grid, valid pixels and predictions; polygons cut to it.

Pixel metrics are taken on the image's grid (predictions and truth rasterized with the pixel-centre rule),
pixels outside the image's valid mask excluded. Polygon metrics with ``edge_rule="clip"`` (default): truth and
predictions clipped to the image extent, pieces of zero area dropped (a building cut by the image edge is
compared with the part of it the image shows, as in SpaceNet); with ``edge_rule="point"``: whole polygons whose
representative point lies inside the image (half-open pixel extent, so adjacent tiles never share one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_bounds
from shapely.geometry import Polygon, box

from bldgseg.enrich import read_mask_file
from bldgseg.errors import InputError
from bldgseg.evaluation.sources import (
    image_info,
    image_paths_from_key,
    image_valid,
    mask_valid,
    paired_image,
    raster_extent,
    same_crs,
    source_image,
)
from bldgseg.io import discover_inputs
from bldgseg.vectorize import mask_to_polygons

__all__ = [
    "EDGE_RULES",
    "Grid",
    "Unit",
    "clip_to_grid",
    "clip_to_polygon",
    "counted_polygons",
    "raster_units",
    "select_near",
    "vector_units",
]

EDGE_RULES = {
    "clip": "polygon metrics per image: truth and predictions clipped to the image extent (pieces of zero "
    "area dropped), so a building cut by the image edge is compared with the part the image shows",
    "point": "polygon metrics per image: whole polygons whose representative point lies inside the image",
}


@dataclass(frozen=True)
class Grid:
    """A pixel grid the metrics are computed on."""

    crs: Any
    transform: Affine
    width: int
    height: int

    def extent(self) -> Polygon:
        """The grid's outline in its CRS."""
        return raster_extent(self.transform, self.width, self.height)

    def inside(self, points: gpd.GeoSeries) -> np.ndarray:
        """Points inside the half-open pixel extent (col in [0, width), row in [0, height))."""
        if len(points) == 0:
            return np.zeros(0, dtype=bool)
        geoms = np.asarray(points.values, dtype=object)
        cols, rows = ~self.transform @ (shapely.get_x(geoms), shapely.get_y(geoms))
        with np.errstate(invalid="ignore"):
            return (cols >= 0) & (cols < self.width) & (rows >= 0) & (rows < self.height)

    def rasterize(self, geoms: Iterable[Any]) -> np.ndarray:
        """Boolean mask of the pixels whose centre lies inside any of ``geoms``."""
        shapes = [(g, 1) for g in geoms if g is not None and not g.is_empty]
        if not shapes:
            return np.zeros((self.height, self.width), dtype=bool)
        out = rasterize(
            shapes, out_shape=(self.height, self.width), transform=self.transform, fill=0, dtype="uint8"
        )
        return out.astype(bool)


@dataclass
class Unit:
    """One evaluated image: its grid, valid pixels, predictions and what the overlay shows."""

    name: str
    path: Path
    grid: Grid
    valid: np.ndarray
    pred: gpd.GeoDataFrame  # in the grid CRS
    pred_pixels: np.ndarray
    background: Path
    kind: str
    bands: tuple[int, int, int] | None


def select_near(frame: gpd.GeoDataFrame | gpd.GeoSeries, grid: Grid) -> gpd.GeoDataFrame | gpd.GeoSeries:
    """The rows meeting the grid's extent, in the grid's CRS (selected before reprojecting, with the index)."""
    extent = grid.extent()
    same = CRS.from_user_input(frame.crs).equals(CRS.from_user_input(grid.crs))
    bounds = extent.bounds if same else transform_bounds(grid.crs, frame.crs, *extent.bounds, densify_pts=21)
    sub = frame.iloc[np.sort(frame.sindex.query(box(*bounds), predicate="intersects"))]
    if not same:
        sub = sub.to_crs(grid.crs)
    return sub[sub.intersects(extent).to_numpy()]


def _polygonal(geom: Any) -> Any:
    """``geom`` without the lines and points an intersection can leave (None when nothing polygonal remains)."""
    if geom is None or geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    polys = [p for g in parts for p in shapely.get_parts(g)]
    return shapely.MultiPolygon(polys) if polys else None


def clip_to_grid(frame: gpd.GeoDataFrame, grid: Grid) -> gpd.GeoDataFrame:
    """Rows clipped to the grid's extent (rows already inside untouched); rows with no area inside dropped."""
    return clip_to_polygon(frame, grid.extent())


def clip_to_polygon(frame: gpd.GeoDataFrame, extent: Any) -> gpd.GeoDataFrame:
    """Rows clipped to ``extent`` (a (multi)polygon in the frame's CRS; rows already inside untouched); rows
    with no area inside dropped."""
    geoms = np.asarray(frame.geometry.values, dtype=object)
    if len(geoms) == 0:
        return frame
    invalid = ~shapely.is_missing(geoms) & ~shapely.is_valid(geoms)
    if invalid.any():  # OSM outlines, or outlines after reprojection, can self-touch
        geoms[invalid] = [_polygonal(g) for g in shapely.make_valid(geoms[invalid])]
    inside = shapely.within(geoms, extent)
    cut = geoms.copy()
    todo = ~inside & ~shapely.is_missing(geoms)
    if todo.any():
        cut[todo] = [_polygonal(g) for g in shapely.intersection(geoms[todo], extent)]
    keep = np.array([g is not None and not g.is_empty and g.area > 0 for g in cut], dtype=bool)
    out = frame.copy()
    out[out.geometry.name] = gpd.GeoSeries(cut, index=frame.index, crs=frame.crs)
    return out[keep]


def counted_polygons(frame: gpd.GeoDataFrame, grid: Grid, edge_rule: str) -> gpd.GeoDataFrame:
    """The rows of ``frame`` (in the grid's CRS) that the polygon metrics count, per ``edge_rule``."""
    if edge_rule == "clip":
        return clip_to_grid(frame, grid)
    return frame[grid.inside(frame.geometry.representative_point())]


def vector_units(
    pred: gpd.GeoDataFrame, pred_files: list[Path], images: list[Path] | None, key: str
) -> tuple[Iterable[Unit], int, int]:
    """Units from a footprint file of predictions, the number of images and of predictions left unassigned."""
    has_key = key in pred.columns
    if images:
        paths = discover_inputs(images)
    elif has_key:
        paths = image_paths_from_key(pred, pred_files, key)
    else:
        raise InputError(
            f"{pred_files[0].name}: no {key!r} column to find the images from; pass the images with --images"
        )
    if not paths:
        raise InputError(f"{pred_files[0].name}: no images to evaluate on; pass GeoTIFFs with --images")
    assigned = np.zeros(len(pred), dtype=bool)
    owner: list[np.ndarray] = []
    if has_key:
        values = pred[key].fillna("").astype(str).to_numpy()
        image_of = {v: source_image(v, paths) for v in set(values) if v}
        for path in paths:
            sel = np.array([bool(v) and image_of[v] == path for v in values], dtype=bool)
            owner.append(sel)
            assigned |= sel

    def units() -> Iterable[Unit]:
        for i, path in enumerate(paths):
            info = image_info(path)
            grid = Grid(info.crs, info.transform, info.width, info.height)
            if has_key:
                subset = pred[owner[i]]
                subset = subset if same_crs(subset.crs, info.crs) else subset.to_crs(info.crs)
            else:
                subset = select_near(pred, grid)
            yield Unit(
                name=path.name,
                path=path,
                grid=grid,
                valid=image_valid(info),
                pred=subset,
                pred_pixels=grid.rasterize(subset.geometry.values),
                background=path,
                kind="rgb",
                bands=info.bands,
            )

    unassigned = int((~assigned).sum()) if has_key else 0
    return units(), len(paths), unassigned


def raster_units(paths: list[Path], images: list[Path] | None, threshold: float) -> Iterable[Unit]:
    """Units from mask/probability rasters of predictions (each on its own grid)."""
    image_paths = discover_inputs(images) if images else []
    for path in paths:
        mask, _prob, transform, crs = read_mask_file(path, threshold)
        grid = Grid(crs, transform, mask.shape[1], mask.shape[0])
        valid = mask_valid(path)
        name, background, kind, bands = path.name, path, "mask", None
        image = paired_image(path, image_paths)
        if image is not None:
            info = image_info(image)
            if same_crs(info.crs, crs):
                name, background, kind, bands = image.name, image, "rgb", info.bands
                if info.transform.almost_equals(transform) and (info.height, info.width) == mask.shape:
                    valid &= image_valid(info)
        yield Unit(
            name=name,
            path=path,
            grid=grid,
            valid=valid,
            pred=mask_to_polygons(mask, transform, crs),
            pred_pixels=mask,
            background=background,
            kind=kind,
            bands=bands,
        )
