"""From a probability window to measured buildings: vectorize, post-process, keep the core's, add attributes.

Nothing here loads a model, so a helper process (:mod:`bldgseg.pipeline.bands`) imports it cheaply.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from bldgseg.attributes import height_attributes, image_attributes, shape_attributes
from bldgseg.io import RasterInfo
from bldgseg.mosaic import MosaicTile, tile_of_points
from bldgseg.pipeline.config import UnitSettings
from bldgseg.pipeline.outputs import IMAGE_DATE, order_columns
from bldgseg.postprocess import open_mask, postprocess_chunk, raster_opening_side, split_touching
from bldgseg.vectorize import instance_outlines, mask_to_polygons

__all__ = ["buildings_in_window", "measure_buildings", "owned_by_core"]


def buildings_in_window(
    prob: np.ndarray,
    labels: np.ndarray | None,
    info: RasterInfo,
    read: Window,
    core: Window,
    settings: UnitSettings,
    model_name: str,
    tiles: Sequence[MosaicTile] = (),
) -> gpd.GeoDataFrame:
    """The measured buildings owned by ``core`` from the probability (and instance labels) of window ``read``.

    Thresholded (or instance) polygons are post-processed as the settings say (opening on the raster, the split
    of touching buildings, fragments, holes, simplification), kept when their representative point lies in
    ``core`` and measured (:func:`measure_buildings`).
    """
    mask = prob >= settings.threshold if labels is None else None
    origin = (int(read.row_off), int(read.col_off))
    post = settings.postprocess()
    side = raster_opening_side(post, info) if mask is not None else 0
    if side:  # step 1 on the raster: the opened mask is vectorized, its polygons need no opening
        mask, post = open_mask(mask, side), dataclasses.replace(post, opening_m=0.0)
    if mask is not None and post.split_core > 0:  # parts split into touching buildings go on as instances
        split = split_touching(prob, mask, post.split_core)
        whole = postprocess_chunk(vectorize_window(info, origin, prob, mask & (split == 0), None), info, post)
        pieces = postprocess_chunk(
            vectorize_window(info, origin, prob, None, split), info, post, instances=True
        )
        polygons = pd.concat([whole, pieces], ignore_index=True)
    else:
        polygons = vectorize_window(info, origin, prob, mask, labels)
        polygons = postprocess_chunk(polygons, info, post, labels is not None)
    polygons = owned_by_core(polygons, info, core).reset_index(drop=True)
    return measure_buildings(polygons, info, settings, model_name, tiles)


def vectorize_window(
    info: RasterInfo,
    origin: tuple[int, int],
    prob: np.ndarray,
    mask: np.ndarray | None,
    labels: np.ndarray | None,
) -> gpd.GeoDataFrame:
    """Raw polygons of the read window (from ``origin``: row, col): one per instance label, else per connected
    component of ``mask`` (the thresholded probability; post-processing simplifies them).

    Vertices come from the raster's own pixel coordinates and transform, so a building gets bit-identical
    vertices from every chunk that sees it whole."""
    if labels is not None:
        return instance_outlines(labels, info.transform, info.crs, prob=prob, pixel_origin=origin)
    return mask_to_polygons(mask, info.transform, info.crs, prob=prob, pixel_origin=origin)


def owned_by_core(polygons: gpd.GeoDataFrame, info: RasterInfo, core: Window) -> gpd.GeoDataFrame:
    """Keep the polygons whose representative point lies in the core (half-open), so each is kept once."""
    if polygons.empty:
        return polygons
    left, bottom, right, top = window_bounds(core, info.transform)
    xmin, xmax = min(left, right), max(left, right)
    ymin, ymax = min(bottom, top), max(bottom, top)
    points = polygons.geometry.representative_point()
    inside = (points.x >= xmin) & (points.x < xmax) & (points.y > ymin) & (points.y <= ymax)
    return polygons[inside.to_numpy()]


def measure_buildings(
    polygons: gpd.GeoDataFrame,
    info: RasterInfo,
    settings: UnitSettings,
    model_name: str,
    tiles: Sequence[MosaicTile] = (),
) -> gpd.GeoDataFrame:
    """Add shape, image and height attributes to vectorized polygons.

    ``source_image`` is the raster's path (a remote raster's URL), or for a mosaic (``tiles`` given) the tile
    that holds each building's representative point; ``image_date`` is added for a raster of a STAC Item.
    """
    parts = [polygons[["geometry", "confidence"]], shape_attributes(polygons)]
    if settings.texture:
        threads = settings.torch_threads or os.cpu_count() or 1
        parts.append(image_attributes(polygons, info.path, bands=info.bands, threads=threads))
    parts.append(
        height_attributes(polygons, ndsm=settings.ndsm, dsm=settings.dsm, dtm=settings.dtm).to_frame()
    )
    frame = pd.concat(parts, axis=1)
    if tiles and len(polygons):
        points = polygons.geometry.representative_point()
        frame["source_image"] = tile_of_points(points.x.to_numpy(), points.y.to_numpy(), tiles)
    else:
        frame["source_image"] = str(info.path)
    if info.image_date is not None:
        frame[IMAGE_DATE] = info.image_date
    frame["model"] = model_name
    return order_columns(gpd.GeoDataFrame(frame, geometry="geometry", crs=info.crs))
