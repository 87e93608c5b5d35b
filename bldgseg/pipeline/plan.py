"""Planning a run: mosaics of touching files, work units (chunk + halo) with stable ids, mixed-CRS files, the
output CRS, GDAL cache sizes."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from bldgseg.io import RasterInfo, SkippedInput, discover_inputs
from bldgseg.modelgrid import ModelGrid, model_scale
from bldgseg.mosaic import Mosaic, MosaicTile, plan_mosaics, vrt_digest
from bldgseg.pipeline.config import RunConfig
from bldgseg.remote import RemotePath, remote_identity
from bldgseg.runstate import MOSAICS
from bldgseg.tiling import Chunk, plan_chunks


@dataclass
class RasterPlan:
    """The rasters a job processes: the usable files, and the mosaics some of them form."""

    infos: list[RasterInfo]
    mosaics: list[Mosaic]

    @property
    def paths(self) -> list[Path]:
        """The rasters in processing order: single files, and each mosaic's VRT where its first tile was."""
        first_tile = {m.tiles[0].path: m.path for m in self.mosaics}
        in_mosaic = {t.path for m in self.mosaics for t in m.tiles}
        return [
            first_tile.get(i.path, i.path) for i in self.infos if i.path in first_tile or i.path not in in_mosaic
        ]


def plan_rasters(config: RunConfig, infos: list[RasterInfo], run_dir: Path) -> RasterPlan:
    """Group touching files into mosaics (VRTs to be written in ``run_dir``) unless ``config.separate``."""
    mosaics = [] if config.separate else plan_mosaics(infos, Path(run_dir) / MOSAICS)
    return RasterPlan(infos, mosaics)


@dataclass
class WorkUnit:
    """One chunk of one raster: the core it owns and the halo-grown window it reads."""

    info: RasterInfo
    chunk: Chunk
    index: int
    #: Stable id (raster path, size, mtime, windows): names the unit's part file, the same in every session.
    uid: str = ""
    #: A mosaic's tiles under the read window (empty for a single file): they name each building's source image.
    tiles: tuple[MosaicTile, ...] = ()


def halo_pixels(info: RasterInfo, max_building_size_m: float) -> int:
    """Halo wide enough for the largest building, in source pixels."""
    return int(np.ceil(max_building_size_m / info.gsd_m))


#: ``reach(info, read) -> Window``: the source pixels a chunk with read window ``read`` takes its pixels from.
Reach = Callable[[RasterInfo, Window], Window]


def model_reach(model_gsd_m: float, tile_size: int, overlap: int) -> Reach:
    """The :data:`Reach` of a model: a chunk reads every model window of the raster's grid that touches its
    read window (:meth:`bldgseg.modelgrid.ModelGrid.chunk_region`), up to a window beyond it on each side."""

    def reach(info: RasterInfo, read: Window) -> Window:
        grid = ModelGrid.for_raster(
            info.height, info.width, model_scale(info.gsd_m, model_gsd_m), tile_size, overlap
        )
        return grid.source_window(grid.chunk_region(read).model)

    return reach


def plan_units(
    infos: list[RasterInfo],
    chunk_size: int,
    max_building_size_m: float,
    mosaics: Mapping[Path, Mosaic] | None = None,
    reach: Reach | None = None,
) -> list[WorkUnit]:
    """Split every raster into chunks with a halo; small rasters are one unit. Each unit gets a stable id.

    A raster that is one of ``mosaics`` (keyed by VRT path) gets the unit's tiles; chunks whose core covers
    no tile (gaps of an L-shaped mosaic) are left out, there is nothing to find there. The id hashes the tiles
    under ``reach(info, read)`` (default: the read window), the pixels the unit's result depends on.
    """
    mosaics = mosaics or {}
    units: list[WorkUnit] = []
    for info in infos:
        halo = halo_pixels(info, max_building_size_m)
        mosaic = mosaics.get(info.path)
        identity = file_identity(info.path) if mosaic is None else f"{vrt_digest(mosaic)}|{info.stretch}"
        for chunk in plan_chunks(info.height, info.width, chunk_size, halo):
            tiles: tuple[MosaicTile, ...] = ()
            text = f"{identity}|{window_key(chunk.core)}|{window_key(chunk.read)}"
            if mosaic is not None:
                if not mosaic.tiles_in_window(chunk.core):
                    continue
                tiles = mosaic.tiles_in_window(chunk.read)
                read = chunk.read if reach is None else reach(info, chunk.read)
                text += "|" + "|".join(file_identity(t.path) for t in mosaic.tiles_in_window(read))
            uid = hashlib.sha1(text.encode()).hexdigest()[:20]
            units.append(WorkUnit(info, chunk, len(units), uid, tiles))
    return units


def file_identity(path: Path | RemotePath) -> str:
    """The file's path, size and modification time (the path alone when it cannot be read); for a remote
    raster, :func:`bldgseg.remote.remote_identity` (URL, size and ETag or Last-Modified)."""
    if isinstance(path, RemotePath):
        return remote_identity(path)
    try:
        stat = path.stat()
    except OSError:
        return str(path)
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def window_key(window: Window) -> str:
    """``col,row,width,height`` of a window, in whole pixels."""
    return f"{int(window.col_off)},{int(window.row_off)},{int(window.width)},{int(window.height)}"


def units_by_raster(units: list[WorkUnit]) -> dict[Path, list[WorkUnit]]:
    """The units of each raster, rasters and units in plan order."""
    by_raster: dict[Path, list[WorkUnit]] = defaultdict(list)
    for unit in units:
        by_raster[unit.info.path].append(unit)
    return by_raster


def gdal_cache_mb(infos: list[RasterInfo], chunk_size: int, max_building_size_m: float) -> int:
    """GDAL block cache for one unit: twice its largest read window at 16 bits per band (at least 64 MiB)."""
    halo = max((halo_pixels(i, max_building_size_m) for i in infos), default=0)
    side = chunk_size + 2 * halo
    return max(64, int(np.ceil(2 * 3 * 2 * side * side / 2**20)))


def output_crs(infos: list[RasterInfo], requested: str | None) -> Any:
    """The requested CRS, else the most common input CRS (the first one on a tie)."""
    if requested:
        return requested
    counts = Counter(info.crs.to_string() for info in infos)
    best = max(counts.values())
    return next(info.crs for info in infos if counts[info.crs.to_string()] == best)


def split_mixed_crs(
    config: RunConfig, infos: list[RasterInfo]
) -> tuple[list[RasterInfo], list[SkippedInput]]:
    """Leave out files whose CRS differs from the majority of their folder (unless ``config.crs`` is set).

    Only files found by searching a folder argument are grouped (by their own folder); files named one by one
    are reprojected into the output CRS as before. The majority is the most common CRS in the folder, the
    first file's (sorted by name) on a tie.
    """
    if config.crs or not infos:
        return infos, []
    searched: set[Path] = set()
    for raw in config.inputs:
        if Path(raw).is_dir():
            searched.update(discover_inputs(raw, config.glob))
    groups: dict[Path, list[RasterInfo]] = defaultdict(list)
    for info in infos:
        if info.path in searched:
            groups[info.path.parent].append(info)
    left_out: dict[Path, SkippedInput] = {}
    for folder, members in groups.items():
        left_out.update(_minority_crs_files(folder, members))
    kept = [i for i in infos if i.path not in left_out]
    return kept, [left_out[i.path] for i in infos if i.path in left_out]


def _minority_crs_files(folder: Path, members: list[RasterInfo]) -> dict[Path, SkippedInput]:
    """The files of one folder whose CRS is not the folder's majority CRS, each with its reason."""
    counts = Counter(m.crs.to_string() for m in members)
    if len(counts) < 2:
        return {}
    best = max(counts.values())
    majority = next(m.crs.to_string() for m in members if counts[m.crs.to_string()] == best)
    left_out: dict[Path, SkippedInput] = {}
    for m in members:
        crs = m.crs.to_string()
        if crs != majority:
            left_out[m.path] = SkippedInput(
                m.path,
                f"{m.path.name}: mixed CRS in folder {folder}: this file is in {crs}, "
                f"{counts[majority]} other file(s) in {majority}; reproject it "
                f"(`gdalwarp -t_srs {majority} {m.path.name} out.tif`) or pass --crs to accept mixed CRSs",
            )
    return left_out
