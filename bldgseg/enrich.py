"""Jobs on existing rasters or footprints: vectorize mask files, enrich footprints with image attributes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.errors import RasterioIOError
from shapely.geometry import box

from bldgseg.attributes import height_attributes, image_attributes, shape_attributes
from bldgseg.defaults import DEFAULT_MIN_AREA_M2
from bldgseg.errors import InputError
from bldgseg.export import errors_table, write_buildings
from bldgseg.footprints import read_footprints
from bldgseg.io import SkippedInput, discover_inputs, open_raster_info
from bldgseg.progress import ProgressFn, report_progress
from bldgseg.vector_formats import check_vector_output
from bldgseg.vectorize import mask_to_polygons


def read_mask_file(
    path: Path, threshold: float
) -> tuple[np.ndarray, np.ndarray | None, rasterio.Affine, object]:
    """A 1-band mask (0/1 or 0/255) or probability raster (float 0..1, or uint8 with scale 1/255)."""
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise InputError(
                    f"{path.name}: has no coordinate reference system; assign one with gdal_edit.py -a_srs"
                )
            band = ds.read(1, masked=True)
            scale = ds.scales[0] or 1.0
            transform, crs = ds.transform, ds.crs
    except RasterioIOError as exc:
        raise InputError(f"{path.name}: cannot be read as a raster ({exc}); check the file") from exc
    values = band.filled(0).astype(np.float32) * scale
    if values.max(initial=0) > 1.0:  # 0/255 masks
        values = values / values.max()
    is_binary = np.isin(np.unique(values), (0.0, 1.0)).all()
    prob = None if is_binary else values
    return values >= threshold, prob, transform, crs


def vectorize_mask_files(
    masks: Sequence[Path],
    output: Path,
    threshold: float = 0.5,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    simplify_m: float = 0.2,
    regularize: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> tuple[int, list[SkippedInput]]:
    """Polygons with shape attributes from mask rasters into ``output`` (layer ``buildings``; GeoPackage,
    GeoParquet or FlatGeobuf by extension)."""
    check_vector_output(output, overwrite)
    paths = discover_inputs(masks)
    frames, skipped = [], []
    for done, path in enumerate(paths, start=1):
        try:
            mask, prob, transform, crs = read_mask_file(path, threshold)
        except InputError as exc:
            skipped.append(SkippedInput(path, str(exc)))
            continue
        polygons = mask_to_polygons(
            mask,
            transform,
            crs,
            prob=prob,
            min_area_m2=min_area_m2,
            simplify_m=simplify_m,
            regularize=regularize,
        )
        frame = pd.concat([polygons, shape_attributes(polygons)], axis=1)
        frame["source_image"] = str(path)
        frames.append(gpd.GeoDataFrame(frame, geometry="geometry", crs=crs))
        report_progress(progress, "masks", done, len(paths))
    if not frames:
        raise InputError(f"no usable mask rasters among {len(paths)} file(s)")
    crs = frames[0].crs
    buildings = gpd.GeoDataFrame(pd.concat([f.to_crs(crs) for f in frames], ignore_index=True), crs=crs)
    write_buildings(output, buildings, {"errors": skipped_table(skipped)}, overwrite=overwrite)
    return len(buildings), skipped


def skipped_table(skipped: list[SkippedInput]) -> pd.DataFrame:
    """The ``errors`` table of the output: files left out and why (same columns as ``bldgseg run``'s)."""
    return errors_table((s.path, s.reason, "scan", "") for s in skipped)


def enrich_footprints(
    footprints: Path,
    images: Sequence[Path],
    output: Path,
    layer: str | None = None,
    ndsm: Path | None = None,
    dsm: Path | None = None,
    dtm: Path | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> tuple[int, list[SkippedInput]]:
    """Shape, colour, texture and height attributes for existing footprints; each footprint is measured from
    the first image (in the given order) that covers its centroid."""
    check_vector_output(output, overwrite)
    gdf = read_footprints(footprints, layer, several="first")
    measured = pd.DataFrame(index=gdf.index)
    assigned = pd.Series("", index=gdf.index, dtype="string")
    skipped: list[SkippedInput] = []
    paths = discover_inputs(images)
    for done, path in enumerate(paths, start=1):
        try:
            info = open_raster_info(path)
        except InputError as exc:
            skipped.append(SkippedInput(path, str(exc)))
            continue
        left, bottom, right, top = rasterio.transform.array_bounds(info.height, info.width, info.transform)
        extent = box(min(left, right), min(bottom, top), max(left, right), max(bottom, top))
        centroids = gdf.geometry.to_crs(info.crs).centroid
        todo = (assigned == "") & centroids.within(extent).to_numpy()
        if todo.any():
            values = image_attributes(gdf[todo], info.path, bands=info.bands, threads=os.cpu_count() or 1)
            measured = values.combine_first(measured)
            assigned[todo] = str(info.path)
        report_progress(progress, "images", done, len(paths))
    shapes = shape_attributes(gdf)
    remeasured = [*shapes.columns, *measured.columns, "height_m", "source_image"]
    given = gdf.drop(columns=[c for c in remeasured if c in gdf.columns])  # e.g. a bldgseg output enriched again
    out = pd.concat([given, shapes, measured.reindex(gdf.index)], axis=1)
    out["height_m"] = height_attributes(gdf, ndsm=ndsm, dsm=dsm, dtm=dtm)
    out["source_image"] = assigned
    result = gpd.GeoDataFrame(out, geometry=gdf.geometry.name, crs=gdf.crs)
    write_buildings(output, result, {"errors": skipped_table(skipped)}, overwrite=overwrite)
    return len(result), skipped
