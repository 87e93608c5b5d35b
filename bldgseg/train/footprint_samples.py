"""Training samples from rasters and building footprints: tiles at the target GSD with footprints burnt in."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.windows import Window

from bldgseg.errors import InputError
from bldgseg.footprints import read_footprints
from bldgseg.instance_targets import rasterize_instances
from bldgseg.io import DEFAULT_GLOB, RasterInfo, read_rgb, scan_inputs
from bldgseg.palettes import IGNORE_INDEX
from bldgseg.train.data import SampleList, SourceWindow, TrainSample
from bldgseg.train.resample import bounds_4326, check_gsd, scale_factor

__all__ = ["load_geotiff_footprints"]


def load_geotiff_footprints(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    footprints: str | os.PathLike[str],
    target_gsd: float,
    layer: str | int | None = None,
    tile_px: int = 1024,
    *,
    block_tiles: int = 4,
    glob: str = DEFAULT_GLOB,
    bands: Sequence[int] | None = None,
) -> SampleList:
    """Rasters (any GDAL format) + building footprints (any OGR format) -> samples at ``target_gsd``.

    Rasters are found and validated with :func:`bldgseg.io.scan_inputs`; bad ones are left out and listed in
    the result's ``skipped``. Footprints are read once, reprojected to each raster's CRS and rasterized
    (``all_touched=False``) onto each tile's grid at the target GSD (the source window's transform scaled by
    the resampling factor), so image and mask pixels coincide exactly. Each footprint is also burned as its
    own id into the sample's ``instances`` (:func:`bldgseg.instance_targets.rasterize_instances`), so touching
    buildings stay apart for instance training. Each raster is cut into nearly equal
    tiles of at most ``tile_px`` pixels at the target GSD; ``group`` is ``"{stem}:{row // block_tiles}:{col //
    block_tiles}"`` so neighbouring tiles stay on one side of a split; ``origin`` is the tile's window in the
    raster. Pixels outside the raster's valid mask are 255 (ignore) in the mask and 0 in the image; tiles with
    no valid pixel are dropped.
    Raises :class:`InputError` for unreadable footprints or when they overlap none of the rasters.
    """
    target = check_gsd(target_gsd, "target_gsd")
    assert target is not None
    if int(tile_px) < 16:
        raise InputError(f"tile_px={tile_px}: too small; use at least 16 (e.g. 512 or 1024)")
    if int(block_tiles) < 1:
        raise InputError(f"block_tiles={block_tiles}: must be 1 or more")
    tile_px, block_tiles = int(tile_px), int(block_tiles)
    footprints = Path(footprints).expanduser()
    gdf = read_footprints(footprints, layer, option="--footprints-layer", repair=True, allow_empty=True)
    infos, skipped = scan_inputs(images, glob, bands)

    samples = SampleList(skipped=skipped)
    by_crs: dict[str, Any] = {}
    burned_any = False
    for info in infos:
        key = info.crs.to_wkt()
        if key not in by_crs:  # reproject and index the footprints once per CRS
            geoms = np.asarray(gdf.to_crs(info.crs).geometry.values, dtype=object)
            by_crs[key] = (geoms, shapely.STRtree(geoms) if len(geoms) else None)
        geoms, tree = by_crs[key]
        tiles, burned = _footprint_tiles(info, geoms, tree, target, tile_px, block_tiles)
        burned_any |= burned
        samples.extend(tiles)
    if infos and len(gdf) and not burned_any:
        raise InputError(
            f"{footprints.name}: none of the {len(gdf)} footprints overlaps the {len(infos)} raster(s); "
            "check that footprints and imagery cover the same place (and the footprints' CRS)"
        )
    return samples


def _footprint_tiles(
    info: RasterInfo,
    geoms: np.ndarray,
    tree: shapely.STRtree | None,
    target_gsd: float,
    tile_px: int,
    block_tiles: int,
) -> tuple[list[TrainSample], bool]:
    """One raster's tiles at the target GSD, with footprints (in the raster's CRS) burnt in."""
    factor = scale_factor(info.gsd_m, target_gsd)
    src_step = max(1, math.floor(tile_px / factor))
    row_edges = _edges(info.height, src_step)
    col_edges = _edges(info.width, src_step)
    stem = info.path.stem
    out: list[TrainSample] = []
    burned_any = False
    for ti, (r0, r1) in enumerate(zip(row_edges[:-1], row_edges[1:], strict=True)):
        for tj, (c0, c1) in enumerate(zip(col_edges[:-1], col_edges[1:], strict=True)):
            h, w = r1 - r0, c1 - c0
            oh, ow = max(1, round(h * factor)), max(1, round(w * factor))
            window = Window(c0, r0, w, h)
            rgb, valid = read_rgb(info, window, out_shape=(oh, ow))
            if not valid.any():
                continue
            win_transform = info.transform * Affine.translation(c0, r0)
            out_transform = win_transform * Affine.scale(w / ow, h / oh)
            instances = np.zeros((oh, ow), dtype=np.int32)
            if tree is not None:
                corners = [win_transform * (c, r) for c, r in ((0, 0), (w, 0), (0, h), (w, h))]
                xs, ys = zip(*corners, strict=True)
                hits = tree.query(shapely.box(min(xs), min(ys), max(xs), max(ys)))
                if len(hits):
                    instances = rasterize_instances(geoms[np.sort(hits)], out_transform, (oh, ow))
                    burned_any |= bool(instances.any())
            instances[~valid] = 0
            mask = (instances > 0).astype(np.uint8)
            mask[~valid] = IGNORE_INDEX
            out.append(
                TrainSample(
                    image=np.ascontiguousarray(rgb.transpose(1, 2, 0)),
                    mask=mask,
                    source=f"{info.path.name}:{ti}:{tj}",
                    group=f"{stem}:{ti // block_tiles}:{tj // block_tiles}",
                    bounds=bounds_4326(info.crs, win_transform, h, w),
                    origin=SourceWindow(str(info.path), c0, r0, w, h),
                    instances=instances,
                )
            )
    return out, burned_any


def _edges(size: int, step: int) -> list[int]:
    """Cut ``size`` into ceil(size / step) nearly equal parts (no slivers): their integer edges."""
    n = max(1, math.ceil(size / step))
    return [round(i * size / n) for i in range(n + 1)]
