"""Orchestration: rasters -> chunk work units -> (Dask) -> polygons with attributes -> GeoPackage."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from bldgseg import __version__
from bldgseg.attributes import height_attributes, image_attributes, shape_attributes
from bldgseg.errors import InputError, OutputExistsError
from bldgseg.export import write_gpkg
from bldgseg.inference import Predictor, resolve_device
from bldgseg.io import RasterInfo, SkippedInput, read_rgb, scan_inputs
from bldgseg.models import DEFAULT_MODEL, ModelCard, load_checkpoint
from bldgseg.probmaps import ProbabilityMapWriter
from bldgseg.tiling import Chunk, model_shape, plan_chunks
from bldgseg.vectorize import mask_to_polygons

BUILDING_COLUMNS = [
    "area_m2",
    "perimeter_m",
    "width_m",
    "length_m",
    "orientation_deg",
    "compactness",
    "rectangularity",
    "confidence",
    "height_m",
    "texture_contrast",
    "texture_homogeneity",
    "texture_energy",
    "texture_correlation",
    "texture_entropy",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "centroid_lon",
    "centroid_lat",
    "source_image",
    "model",
]


@dataclass
class RunConfig:
    """Everything one ``bldgseg run`` needs; defaults are the CLI's defaults."""

    inputs: list[Path]
    output: Path
    model: str = DEFAULT_MODEL
    glob: str = "*.tif*"
    bands: tuple[int, int, int] | None = None
    device: str = "auto"
    batch_size: int = 8
    tta: bool = False
    threshold: float | None = None
    tile_size: int | None = None
    overlap: int | None = None
    min_area_m2: float = 4.0
    simplify_m: float = 0.2
    regularize: bool = False
    chunk_size: int = 4096
    max_building_size_m: float = 60.0
    ndsm: Path | None = None
    dsm: Path | None = None
    dtm: Path | None = None
    texture: bool = True
    save_masks: Path | None = None
    per_image: bool = False
    overwrite: bool = False
    crs: str | None = None
    scheduler: str | None = None
    threads: int = 1


@dataclass
class UnitSettings:
    """The picklable part of the configuration a worker needs for one work unit."""

    model: str
    device: str
    batch_size: int
    tta: bool
    threshold: float
    tile_size: int | None
    overlap: int | None
    min_area_m2: float
    simplify_m: float
    regularize: bool
    texture: bool
    ndsm: Path | None
    dsm: Path | None
    dtm: Path | None
    keep_probability: bool
    vectorize: bool = True


@dataclass
class WorkUnit:
    """One chunk of one raster: the core it owns and the halo-grown window it reads."""

    info: RasterInfo
    chunk: Chunk
    index: int


@dataclass
class UnitResult:
    unit: WorkUnit
    buildings: gpd.GeoDataFrame
    probability: np.ndarray | None
    seconds: float


@dataclass
class RunResult:
    """What a run produced."""

    output: Path | list[Path]
    buildings: gpd.GeoDataFrame
    skipped: list[SkippedInput]
    metadata: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[str, int, int], None]

_PREDICTORS: dict[tuple, Predictor] = {}
_PREDICTOR_LOCK = threading.Lock()


def get_predictor(settings: UnitSettings) -> Predictor:
    """The model is loaded once per process (worker) and reused by every unit."""
    key = (
        settings.model,
        settings.device,
        settings.batch_size,
        settings.tta,
        settings.tile_size,
        settings.overlap,
    )
    with _PREDICTOR_LOCK:
        if key not in _PREDICTORS:
            model, card = load_checkpoint(settings.model)
            _PREDICTORS[key] = Predictor(
                model,
                card,
                resolve_device(settings.device),
                settings.batch_size,
                settings.tta,
                settings.tile_size,
                settings.overlap,
            )
        return _PREDICTORS[key]


def halo_pixels(info: RasterInfo, max_building_size_m: float) -> int:
    """Halo wide enough for the largest building, in source pixels."""
    return int(np.ceil(max_building_size_m / info.gsd_m))


def plan_units(infos: list[RasterInfo], chunk_size: int, max_building_size_m: float) -> list[WorkUnit]:
    """Split every raster into chunks with a halo; small rasters are one unit."""
    units: list[WorkUnit] = []
    for info in infos:
        halo = halo_pixels(info, max_building_size_m)
        for chunk in plan_chunks(info.height, info.width, chunk_size, halo):
            units.append(WorkUnit(info, chunk, len(units)))
    return units


def predict_chunk(unit: WorkUnit, predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
    """Probability and validity on the source grid of the unit's read window (resampled via the model GSD)."""
    info, read = unit.info, unit.chunk.read
    scale = info.gsd_m / predictor.card.gsd_m
    shape = model_shape(read, scale)
    rgb, valid = read_rgb(info, read, out_shape=shape)
    prob = predictor.predict(rgb, valid)
    source_shape = (int(read.height), int(read.width))
    if prob.shape != source_shape:
        tensor = torch.from_numpy(prob)[None, None]
        prob = F.interpolate(tensor, size=source_shape, mode="bilinear", align_corners=False)[0, 0].numpy()
        valid = (
            F.interpolate(
                torch.from_numpy(valid.astype(np.float32))[None, None], size=source_shape, mode="nearest"
            )[0, 0].numpy()
            > 0.5
        )
        prob = np.where(valid, prob, 0.0).astype(np.float32)
    return prob, valid


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


def process_unit(unit: WorkUnit, settings: UnitSettings) -> UnitResult:
    """Predict, vectorize and measure one work unit (runs on a Dask worker)."""
    start = time.perf_counter()
    predictor = get_predictor(settings)
    prob, _ = predict_chunk(unit, predictor)
    info, read = unit.info, unit.chunk.read
    core_prob = None
    if settings.keep_probability:
        core = unit.chunk.core
        r0, c0 = int(core.row_off - read.row_off), int(core.col_off - read.col_off)
        core_prob = prob[r0 : r0 + int(core.height), c0 : c0 + int(core.width)]
    if not settings.vectorize:
        return UnitResult(
            unit,
            order_columns(gpd.GeoDataFrame(geometry=[], crs=info.crs)),
            core_prob,
            time.perf_counter() - start,
        )
    polygons = mask_to_polygons(
        prob >= settings.threshold,
        window_transform(read, info.transform),
        info.crs,
        prob=prob,
        min_area_m2=settings.min_area_m2,
        simplify_m=settings.simplify_m,
        regularize=settings.regularize,
    )
    polygons = owned_by_core(polygons, info, unit.chunk.core).reset_index(drop=True)
    buildings = measure_buildings(polygons, info, settings, predictor.card.name)
    return UnitResult(unit, buildings, core_prob, time.perf_counter() - start)


def measure_buildings(
    polygons: gpd.GeoDataFrame, info: RasterInfo, settings: UnitSettings, model_name: str
) -> gpd.GeoDataFrame:
    """Add shape, image and height attributes to vectorized polygons."""
    parts = [polygons[["geometry", "confidence"]], shape_attributes(polygons)]
    if settings.texture:
        parts.append(image_attributes(polygons, info.path, bands=info.bands))
    parts.append(
        height_attributes(polygons, ndsm=settings.ndsm, dsm=settings.dsm, dtm=settings.dtm).to_frame()
    )
    frame = pd.concat(parts, axis=1)
    frame["source_image"] = str(info.path)
    frame["model"] = model_name
    return order_columns(gpd.GeoDataFrame(frame, geometry="geometry", crs=info.crs))


def order_columns(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The documented column order; missing measurement columns are added empty."""
    for name in BUILDING_COLUMNS:
        if name not in gdf.columns:
            gdf[name] = "" if name in ("source_image", "model") else np.nan
    return gdf[BUILDING_COLUMNS + ["geometry"]]


def iter_results(units: list[WorkUnit], settings: UnitSettings, config: RunConfig) -> Iterator[UnitResult]:
    """Run units through Dask: an existing cluster with ``scheduler``, else the local threaded scheduler."""
    if config.scheduler:
        from distributed import Client, as_completed

        with Client(config.scheduler, set_as_default=False) as client:
            futures = [client.submit(process_unit, unit, settings, pure=False) for unit in units]
            for future in as_completed(futures):
                yield future.result()
        return
    window = max(1, config.threads) * 2
    for start in range(0, len(units), window):
        tasks = [dask.delayed(process_unit)(unit, settings) for unit in units[start : start + window]]
        yield from dask.compute(*tasks, scheduler="threads", num_workers=max(1, config.threads))


def output_crs(infos: list[RasterInfo], requested: str | None) -> Any:
    """The requested CRS, else the most common input CRS (the first one on a tie)."""
    if requested:
        return requested
    counts = Counter(info.crs.to_string() for info in infos)
    best = max(counts.values())
    return next(info.crs for info in infos if counts[info.crs.to_string()] == best)


def run(config: RunConfig, progress: ProgressFn | None = None) -> RunResult:
    """The main job: every input raster to one GeoPackage of buildings (or one per image)."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    infos, skipped = scan_inputs(config.inputs, glob=config.glob, bands=config.bands)
    check_output(config, infos)
    if not infos:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise InputError(
            f"no usable input rasters among {len(skipped)} file(s) found{': ' + reasons if reasons else ''}"
        )
    card, settings = unit_settings(config, vectorize=True)
    per_image: dict[Path, list[gpd.GeoDataFrame]] = {info.path: [] for info in infos}
    unit_seconds = 0.0
    for result in run_units(infos, settings, config, progress):
        per_image[result.unit.info.path].append(result.buildings)
        unit_seconds += result.seconds
    crs = output_crs(infos, config.crs)
    frames = {path: merge_frames(parts, crs) for path, parts in per_image.items()}
    buildings = merge_frames(list(frames.values()), crs)
    metadata = run_metadata(
        config, card, settings, infos, skipped, started, time.perf_counter() - t0, unit_seconds
    )
    metadata["buildings"] = len(buildings)
    metadata["images"] = len(infos)
    output = write_outputs(config, frames, buildings, metadata, skipped)
    return RunResult(output, buildings, skipped, metadata)


def unit_settings(config: RunConfig, vectorize: bool) -> tuple[ModelCard, UnitSettings]:
    """The model card (checked to load) and the per-unit settings derived from ``config``."""
    _, card = load_checkpoint(config.model)
    settings = UnitSettings(
        model=config.model,
        device=config.device,
        batch_size=config.batch_size,
        tta=config.tta,
        threshold=card.threshold if config.threshold is None else config.threshold,
        tile_size=config.tile_size,
        overlap=config.overlap,
        min_area_m2=config.min_area_m2,
        simplify_m=config.simplify_m,
        regularize=config.regularize,
        texture=config.texture,
        ndsm=config.ndsm,
        dsm=config.dsm,
        dtm=config.dtm,
        keep_probability=config.save_masks is not None,
        vectorize=vectorize,
    )
    return card, settings


def run_units(
    infos: list[RasterInfo], settings: UnitSettings, config: RunConfig, progress: ProgressFn | None
) -> Iterator[UnitResult]:
    """Plan and run the work units, streaming probability maps to disk as chunks finish."""
    units = plan_units(infos, config.chunk_size, config.max_building_size_m)
    writers = open_mask_writers(infos, config.save_masks)
    remaining = Counter(unit.info.path for unit in units)
    try:
        for done, result in enumerate(iter_results(units, settings, config), start=1):
            path = result.unit.info.path
            if result.probability is not None:
                writers[path].write(result.probability, result.unit.chunk.core)
            remaining[path] -= 1
            if remaining[path] == 0 and path in writers:
                writers.pop(path).close()
            if progress:
                progress("chunks", done, len(units))
            yield result
    finally:
        for writer in writers.values():
            writer.abort()


def predict_rasters(
    config: RunConfig, progress: ProgressFn | None = None
) -> tuple[list[Path], list[SkippedInput]]:
    """Probability COGs only (``bldgseg predict``): one per input in ``config.save_masks``."""
    infos, skipped = scan_inputs(config.inputs, glob=config.glob, bands=config.bands)
    if not infos:
        raise InputError(f"no usable input rasters among {len(skipped)} file(s) found")
    stems = unique_stems([info.path for info in infos])
    targets = [Path(config.save_masks) / f"{stems[i.path]}.probability.tif" for i in infos]
    existing = [t for t in targets if t.exists()]
    if existing and not config.overwrite:
        raise OutputExistsError(f"{existing[0]}: already exists; pass --overwrite or choose another folder")
    _, settings = unit_settings(config, vectorize=False)
    for _ in run_units(infos, settings, config, progress):
        pass
    return targets, skipped


def merge_frames(parts: list[gpd.GeoDataFrame], crs: Any) -> gpd.GeoDataFrame:
    """Concatenate building frames, reprojecting each to ``crs``."""
    frames = [p.to_crs(crs) for p in parts if len(p)]
    if not frames:
        return order_columns(
            gpd.GeoDataFrame({"geometry": gpd.GeoSeries([], crs=crs)}, geometry="geometry", crs=crs)
        )
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=crs)


def unique_stems(paths: list[Path]) -> dict[Path, str]:
    """A file stem per input, prefixed with its folder's name where stems repeat."""
    names = Counter(p.stem for p in paths)
    return {p: p.stem if names[p.stem] == 1 else f"{p.parent.name}_{p.stem}" for p in paths}


def per_image_targets(config: RunConfig, paths: list[Path]) -> dict[Path, Path]:
    """Output GeoPackage of each input with ``per_image``."""
    return {p: Path(config.output) / f"{stem}.gpkg" for p, stem in unique_stems(paths).items()}


def check_output(config: RunConfig, infos: list[RasterInfo]) -> None:
    """Refuse an existing output before any work is done."""
    if config.per_image:
        existing = [p for p in per_image_targets(config, [i.path for i in infos]).values() if p.exists()]
        if existing and not config.overwrite:
            raise OutputExistsError(
                f"{existing[0]}: already exists ({len(existing)} in all); pass --overwrite or choose another folder"
            )
        return
    if config.output.exists() and not config.overwrite:
        raise OutputExistsError(
            f"{config.output}: already exists; pass --overwrite to replace it or choose another -o"
        )
    if config.output.suffix.lower() != ".gpkg":
        raise InputError(
            f"{config.output}: the output must be a GeoPackage (.gpkg); use e.g. -o buildings.gpkg"
        )


def open_mask_writers(infos: list[RasterInfo], folder: Path | None) -> dict[Path, ProbabilityMapWriter]:
    if folder is None:
        return {}
    stems = unique_stems([info.path for info in infos])
    return {
        info.path: ProbabilityMapWriter(info, Path(folder) / f"{stems[info.path]}.probability.tif")
        for info in infos
    }


def run_metadata(
    config: RunConfig,
    card: ModelCard,
    settings: UnitSettings,
    infos: list[RasterInfo],
    skipped: list[SkippedInput],
    started: datetime,
    seconds: float,
    unit_seconds: float,
) -> dict[str, Any]:
    """The row of the ``runs`` table."""
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "inputs"}
    params.update(threshold=settings.threshold, output=str(config.output))
    return {
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bldgseg_version": __version__,
        "torch_version": torch.__version__,
        "device": str(resolve_device(config.device)),
        "model": card.name,
        "model_card": json.dumps(card.to_dict()),
        "parameters": json.dumps(params, default=str),
        "inputs": json.dumps(
            [
                {
                    "path": str(i.path),
                    "crs": i.crs.to_string(),
                    "gsd_m": round(i.gsd_m, 4),
                    "width": i.width,
                    "height": i.height,
                    "bands": list(i.bands),
                    "stretch_8bit": i.stretch,
                }
                for i in infos
            ]
        ),
        "skipped": json.dumps([{"path": str(s.path), "reason": s.reason} for s in skipped]),
        "seconds_total": round(seconds, 2),
        "seconds_in_units": round(unit_seconds, 2),
    }


def write_outputs(
    config: RunConfig,
    frames: dict[Path, gpd.GeoDataFrame],
    buildings: gpd.GeoDataFrame,
    metadata: dict[str, Any],
    skipped: list[SkippedInput],
) -> Path | list[Path]:
    """One GeoPackage, or one per input image into the ``output`` folder with ``per_image``."""
    skipped_table = pd.DataFrame(
        {"path": [str(s.path) for s in skipped], "reason": [s.reason for s in skipped]}, dtype="string"
    )
    if not config.per_image:
        tables = {"runs": pd.DataFrame([metadata]), "skipped": skipped_table}
        return write_gpkg(config.output, {"buildings": buildings}, tables, overwrite=config.overwrite)
    Path(config.output).mkdir(parents=True, exist_ok=True)
    targets = per_image_targets(config, list(frames))
    written = []
    for path, frame in frames.items():
        target = targets[path]
        tables = {"runs": pd.DataFrame([metadata])}
        written.append(write_gpkg(target, {"buildings": frame}, tables, overwrite=config.overwrite))
    return written
