"""Whole-area scores: predictions and truth clipped to the union of the image footprints and matched once.

Per-image scores clip every building to its image, so a building cut by a tile edge into two predicted pieces
scores as two exact matches. Whole-area scores look at the layer as a user sees it: the images are grouped
into regions (footprints that touch or overlap, in WGS84), each region's footprints are unioned in one planar
CRS (the images' own when they share a projected one, else the UTM zone of the region's centre), predictions
and truth are clipped to that union (truth from mask rasters also to the masks' extents, its pieces that touch
across raster edges dissolved into one building) and matched once; counts are summed over regions. A building
cut into pieces by tile edges therefore counts as the pieces it became.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from rasterio.warp import transform_bounds
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import box

from bldgseg.evaluation.metrics import (
    attribute_errors,
    empty_attribute_errors,
    match_polygons,
    polygon_from_counts,
    summarize_attribute_errors,
)
from bldgseg.evaluation.units import Grid, clip_to_polygon
from bldgseg.geo_metric import WGS84, to_metric, utm_epsg

__all__ = ["Region", "WholeAreaScorer", "image_regions"]

#: Extents are densified to this many vertices per side before reprojection, so curved edges follow.
_DENSIFY = 32
#: Footprints closer than this (degrees, about a centimetre) touch: adjacent tiles after rounding.
_TOUCH_DEG = 1e-7


@dataclass
class Region:
    """Images whose footprints touch or overlap: their union (``area``) in one planar ``crs``."""

    crs: CRS
    area: Any
    images: int


def _planar_crs(crss: list[CRS], bounds: tuple[float, float, float, float]) -> CRS:
    """The images' CRS when they share a projected one, else the UTM zone at the centre of ``bounds``."""
    first = crss[0]
    if first.is_projected and all(first.equals(c) for c in crss[1:]):
        return first
    west, south, east, north = bounds
    return CRS.from_epsg(int(utm_epsg((west + east) / 2, (south + north) / 2)[0]))


def _reprojected(geom: Any, source: CRS, target: CRS) -> Any:
    """``geom`` from ``source`` to ``target``, densified first so its edges follow the projection."""
    if source.equals(target):
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / _DENSIFY
    dense = shapely.segmentize(geom, step) if step > 0 else geom
    return gpd.GeoSeries([dense], crs=source).to_crs(target).iloc[0]


def image_regions(grids: Sequence[Grid]) -> list[Region]:
    """The regions of touching or overlapping image footprints (see the module docstring)."""
    if not grids:
        return []
    crss = [CRS.from_user_input(g.crs) for g in grids]
    lonlat = [transform_bounds(c, WGS84, *g.extent().bounds, densify_pts=21) for g, c in zip(grids, crss, strict=True)]
    boxes = np.array([box(*b).buffer(_TOUCH_DEG, join_style="mitre") for b in lonlat], dtype=object)
    left, right = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(len(grids), len(grids)))
    _, labels = connected_components(graph, directed=False)
    regions = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        bounds = shapely.union_all(boxes[members]).bounds
        crs = _planar_crs([crss[i] for i in members], bounds)
        parts = [_reprojected(grids[i].extent(), crss[i], crs) for i in members]
        regions.append(Region(crs=crs, area=shapely.union_all(parts), images=len(members)))
    return regions


def _near(frame: gpd.GeoDataFrame | gpd.GeoSeries, region: Region) -> gpd.GeoDataFrame:
    """The rows of ``frame`` meeting the region's bounds, in the region's CRS (index kept)."""
    if isinstance(frame, gpd.GeoSeries):
        frame = gpd.GeoDataFrame(geometry=frame)
    if len(frame) == 0:
        return frame.to_crs(region.crs)
    source = CRS.from_user_input(frame.crs)
    bounds = region.area.bounds
    if not source.equals(region.crs):
        bounds = transform_bounds(region.crs, source, *bounds, densify_pts=21)
    sub = frame.iloc[np.sort(frame.sindex.query(box(*bounds), predicate="intersects"))]
    return sub if source.equals(region.crs) else sub.to_crs(region.crs)


def _dissolved(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Pieces that touch or overlap merged into one polygon each (mask truth cut by raster edges)."""
    if len(frame) < 2:
        return frame.reset_index(drop=True)
    merged = shapely.get_parts(shapely.union_all(np.asarray(frame.geometry.values, dtype=object)))
    return gpd.GeoDataFrame(geometry=list(merged), crs=frame.crs)


@dataclass
class WholeAreaScorer:
    """Accumulates whole-area matching over regions; ``result()`` is the report's ``whole_area`` section."""

    iou_threshold: float = 0.5
    #: n_pred, n_truth, tp, merged, split
    counts: np.ndarray = field(default_factory=lambda: np.zeros(5, dtype=np.int64))
    iou_sum: float = 0.0
    area_m2: float = 0.0
    images: int = 0
    regions: int = 0
    errors: list[pd.DataFrame] = field(default_factory=list)
    #: Areas (m², whole, unclipped) of the predicted polygons counted, for the fragment share.
    pred_areas_m2: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        region: Region,
        preds: Sequence[gpd.GeoDataFrame],
        truth: gpd.GeoDataFrame,
        coverage: gpd.GeoSeries | None,
        dissolve_truth: bool,
    ) -> None:
        """Match the predictions and truth of one region (frames in any CRS)."""
        area = region.area
        if coverage is not None:
            area = area.intersection(shapely.union_all(_near(coverage, region).geometry.values))
        shapely.prepare(area)
        near = [_near(p[[p.geometry.name]], region) for p in preds if len(p)]
        pred_whole = (
            gpd.GeoDataFrame(pd.concat(near, ignore_index=True), crs=region.crs)
            if near
            else gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=region.crs))
        )
        pred = clip_to_polygon(pred_whole, area)
        truth_near = _near(truth[[truth.geometry.name]], region)
        if dissolve_truth:
            truth_near = _dissolved(truth_near)
        truth_counted = clip_to_polygon(truth_near.reset_index(drop=True), area)
        matching = match_polygons(pred, truth_counted, self.iou_threshold)
        self.counts += [
            matching.n_pred,
            matching.n_truth,
            matching.tp,
            len(matching.merged),
            len(matching.split),
        ]
        self.iou_sum += float(matching.matches["iou"].sum()) if matching.tp else 0.0
        self.errors.append(attribute_errors(pred, truth_counted, matching))
        whole = pred_whole.loc[pred.index]
        self.pred_areas_m2.append(shapely.area(np.asarray(to_metric(whole).geometry.values, dtype=object)))
        self.area_m2 += float(shapely.area(to_metric(gpd.GeoSeries([area], crs=region.crs)).geometry.iloc[0]))
        self.images += region.images
        self.regions += 1

    def result(self, pixel: dict[str, Any]) -> dict[str, Any]:
        """The ``whole_area`` section; ``pixel`` is the overall pixel section (its counts are additive)."""
        filled = [e for e in self.errors if len(e)]
        errors = pd.concat(filled, ignore_index=True) if filled else empty_attribute_errors()
        return {
            "images": self.images,
            "regions": self.regions,
            "area_m2": self.area_m2,
            "pixel": pixel,
            "polygon": polygon_from_counts(*(int(v) for v in self.counts), self.iou_sum),
            "attributes": summarize_attribute_errors(errors),
        }

    def fragment_share(self, min_area_m2: float, source: str) -> dict[str, Any]:
        """The ``fragment_share`` section: predicted polygons (whole) under ``min_area_m2`` among those counted."""
        areas = np.concatenate(self.pred_areas_m2) if self.pred_areas_m2 else np.zeros(0)
        fragments = int(np.count_nonzero(areas < min_area_m2))
        return {
            "min_area_m2": float(min_area_m2),
            "min_area_source": source,
            "polygons": int(len(areas)),
            "fragments": fragments,
            "share": fragments / len(areas) if len(areas) else None,
        }
