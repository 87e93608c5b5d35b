"""Orchestration: rasters -> chunk work units -> executor -> part files -> one GeoPackage of buildings.

A work unit is one chunk (core + halo) of one raster. Each unit runs on an executor (local threads by default,
a LocalCluster of processes with ``workers``, an existing Dask cluster with ``scheduler``, SLURM with
``cluster="slurm"``, see :mod:`bldgseg.executors`), which predicts, vectorizes and measures it and writes the
buildings it owns as a part file in the run directory (:mod:`bldgseg.runstate`). Only small records travel
back to the client. When every unit is done the parts are merged, in unit order, into the output GeoPackage
(atomically), so the result does not depend on the executor or on the order units finished in.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import resource
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from bldgseg import __version__
from bldgseg.attributes import (
    IMAGE_COLUMNS,
    SHAPE_COLUMNS,
    height_attributes,
    image_attributes,
    shape_attributes,
)
from bldgseg.errors import BldgsegError, DeviceError, InputError, ModelError, OutputExistsError
from bldgseg.executors import LocalExecutor, SlurmOptions, check_executor_options, open_executor
from bldgseg.inference import Predictor, resolve_device
from bldgseg.instances import label_instances, resample_instance_maps
from bldgseg.io import RasterInfo, SkippedInput, discover_inputs, read_rgb, scan_inputs
from bldgseg.models import DEFAULT_MODEL, ModelCard, load_checkpoint, resolve_checkpoint
from bldgseg.probmaps import ProbabilityMapWriter
from bldgseg.runstate import (
    RunDir,
    UnitRecord,
    file_digest,
    merge_buildings,
    part_paths,
    write_error_part,
    write_part,
)
from bldgseg.tiling import Chunk, model_shape, plan_chunks
from bldgseg.vectorize import instances_to_polygons, mask_to_polygons

_LOCATION = ["centroid_lon", "centroid_lat"]
#: Columns of the ``buildings`` layer, in order: shape, confidence, height, image, location, provenance.
BUILDING_COLUMNS = [
    *(c for c in SHAPE_COLUMNS if c not in _LOCATION),
    "confidence",
    "height_m",
    *IMAGE_COLUMNS,
    *_LOCATION,
    "source_image",
    "model",
]

#: Columns of the ``errors`` table (files left out, units that failed).
ERROR_COLUMNS = ["path", "reason", "stage", "unit"]


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
    #: Worker processes of a LocalCluster (``--workers``); with ``cluster="slurm"`` the number of SLURM jobs.
    workers: int | None = None
    #: ``"slurm"`` for a dask-jobqueue SLURMCluster configured by ``slurm``.
    cluster: str | None = None
    slurm: SlurmOptions | None = None
    #: Run directory for part files (default: a hidden folder next to the output, removed after success).
    run_dir: Path | None = None
    #: Continue the run in ``run_dir``: finished units are not run again.
    resume: bool = False
    #: Modules (names or .py paths) imported here and in every worker first, e.g. custom architectures.
    preload: tuple[str, ...] = ()
    #: Separate touching buildings with the model's instance head; None: when the model card's head is
    #: "instance". False runs an instance model's semantic channel alone (as a semantic model would).
    instances: bool | None = None


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
    #: Group building pixels into instances (centre heatmap + offsets) instead of connected components.
    instances: bool = False
    #: Threads PyTorch uses in a worker process (set by cluster executors; None leaves the default).
    torch_threads: int | None = None
    #: GDAL block cache while a unit runs (MiB; None: GDAL's default of 5 % of RAM). Sized from the chunk, so a
    #: worker's memory does not grow with the amount of raster it has read.
    gdal_cache_mb: int | None = None


@dataclass
class WorkUnit:
    """One chunk of one raster: the core it owns and the halo-grown window it reads."""

    info: RasterInfo
    chunk: Chunk
    index: int
    #: Stable id (raster path, size, mtime, windows): names the unit's part file, the same in every session.
    uid: str = ""


@dataclass
class UnitResult:
    unit: WorkUnit
    buildings: gpd.GeoDataFrame
    probability: np.ndarray | None
    seconds: float


@dataclass(frozen=True)
class RunError:
    """A file left out (``stage`` "scan" or "crs") or a work unit that failed (``stage`` "unit")."""

    path: Path
    reason: str
    stage: str = "scan"
    unit: str = ""


class RunResult:
    """What a run produced. ``buildings`` is read back from the output on first access (it may be large)."""

    def __init__(
        self,
        output: Path | list[Path],
        buildings: gpd.GeoDataFrame | None,
        skipped: list[SkippedInput],
        metadata: dict[str, Any] | None = None,
        errors: list[RunError] | None = None,
        crs: Any = None,
    ):
        self.output = output
        self._buildings = buildings
        self.skipped = skipped
        self.metadata = metadata if metadata is not None else {}
        self.errors = errors if errors is not None else [RunError(s.path, s.reason) for s in skipped]
        self._crs = crs

    @property
    def buildings(self) -> gpd.GeoDataFrame:
        if self._buildings is None:
            outputs = self.output if isinstance(self.output, list) else [self.output]
            frames = [pyogrio.read_dataframe(p, layer="buildings") for p in outputs]
            if self._crs is not None:
                frames = [f.to_crs(self._crs) if f.crs is not None else f for f in frames]
            if len(frames) == 1:
                self._buildings = frames[0]
            else:
                crs = self._crs if self._crs is not None else (frames[0].crs if frames else None)
                self._buildings = merge_frames(frames, crs)
        return self._buildings

    @property
    def failed_units(self) -> list[RunError]:
        return [e for e in self.errors if e.stage == "unit"]


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
            if settings.torch_threads and torch.get_num_threads() != settings.torch_threads:
                torch.set_num_threads(settings.torch_threads)
            model, card = load_checkpoint(settings.model)
            _PREDICTORS[key] = Predictor(
                model,
                card,
                worker_device(settings.device),
                settings.batch_size,
                settings.tta,
                settings.tile_size,
                settings.overlap,
            )
        return _PREDICTORS[key]


def worker_device(name: str) -> torch.device:
    """The device of this process; a LocalCluster worker *i* on a multi-GPU machine takes GPU *i* mod count."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        index = _local_worker_index()
        if index is not None:
            return torch.device("cuda", index % torch.cuda.device_count())
    return device


def _local_worker_index() -> int | None:
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return name if isinstance(name, int) else None


def halo_pixels(info: RasterInfo, max_building_size_m: float) -> int:
    """Halo wide enough for the largest building, in source pixels."""
    return int(np.ceil(max_building_size_m / info.gsd_m))


def plan_units(infos: list[RasterInfo], chunk_size: int, max_building_size_m: float) -> list[WorkUnit]:
    """Split every raster into chunks with a halo; small rasters are one unit. Each unit gets a stable id."""
    units: list[WorkUnit] = []
    for info in infos:
        halo = halo_pixels(info, max_building_size_m)
        identity = _file_identity(info.path)
        for chunk in plan_chunks(info.height, info.width, chunk_size, halo):
            text = f"{identity}|{_window_key(chunk.core)}|{_window_key(chunk.read)}"
            uid = hashlib.sha1(text.encode()).hexdigest()[:20]
            units.append(WorkUnit(info, chunk, len(units), uid))
    return units


def _file_identity(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return str(path)
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def _window_key(window: Window) -> str:
    return f"{int(window.col_off)},{int(window.row_off)},{int(window.width)},{int(window.height)}"


def predict_chunk(
    unit: WorkUnit, predictor: Predictor, instances: bool = False, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Probability, validity and (with ``instances``) instance labels on the source grid of the unit's read
    window. The model sees the window resampled to its GSD; its maps are resampled back (bilinear, offsets
    rescaled), so building pixels are the same with or without instances. ``threshold``: the card's if None.
    """
    info, read = unit.info, unit.chunk.read
    scale = info.gsd_m / predictor.card.gsd_m
    shape = model_shape(read, scale)
    rgb, valid = read_rgb(info, read, out_shape=shape)
    source_shape = (int(read.height), int(read.width))
    if instances:
        maps = resample_instance_maps(predictor.predict_instances(rgb, valid), source_shape)
    else:
        maps = predictor.predict(rgb, valid)[None]
        if shape != source_shape:
            tensor = torch.from_numpy(maps)[None]
            maps = F.interpolate(tensor, size=source_shape, mode="bilinear", align_corners=False)[0].numpy()
    if shape != source_shape:
        mask = torch.from_numpy(valid.astype(np.float32))[None, None]
        valid = F.interpolate(mask, size=source_shape, mode="nearest")[0, 0].numpy() > 0.5
        maps[:, ~valid] = 0.0
    prob = np.ascontiguousarray(maps[0], dtype=np.float32)
    if not instances:
        return prob, valid, None
    # NMS window and stray-fragment size follow the model's pixels on the source grid
    card = predictor.card
    labels = label_instances(
        maps,
        card.threshold if threshold is None else threshold,
        nms_kernel=max(3, 2 * round(card.nms_kernel // 2 / scale) + 1),
        center_threshold=card.center_threshold,
        min_pixels=max(1, round(16 / scale**2)),
    )
    return prob, valid, labels


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
    """Predict, vectorize and measure one work unit (in memory; :func:`run_unit` persists it)."""
    start = time.perf_counter()
    predictor = get_predictor(settings)
    grouped = settings.instances and settings.vectorize  # probability maps alone need no grouping
    prob, _, labels = predict_chunk(unit, predictor, grouped, settings.threshold)
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
    transform = window_transform(read, info.transform)
    if labels is not None:
        polygons = instances_to_polygons(
            labels,
            transform,
            info.crs,
            prob=prob,
            min_area_m2=settings.min_area_m2,
            simplify_m=settings.simplify_m,
            regularize=settings.regularize,
            crs_units_per_m=abs(info.transform.a) / info.gsd_m,
        )
    else:
        polygons = mask_to_polygons(
            prob >= settings.threshold,
            transform,
            info.crs,
            prob=prob,
            min_area_m2=settings.min_area_m2,
            simplify_m=settings.simplify_m,
            regularize=settings.regularize,
        )
    polygons = owned_by_core(polygons, info, unit.chunk.core).reset_index(drop=True)
    buildings = measure_buildings(polygons, info, settings, predictor.card.name)
    return UnitResult(unit, buildings, core_prob, time.perf_counter() - start)


def run_unit(unit: WorkUnit, settings: UnitSettings, run_dir: str) -> UnitRecord:
    """Process one unit and write its part file (runs on the worker); returns only a small record.

    A unit that fails on its data (unreadable pixels, a bad window...) is recorded as an error part and the
    run goes on; model and device problems are raised, they would fail every unit.
    """
    start = time.perf_counter()
    common = {
        "uid": unit.uid,
        "raster": str(unit.info.path),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    cache = (
        rasterio.Env(GDAL_CACHEMAX=settings.gdal_cache_mb * 2**20)
        if settings.gdal_cache_mb
        else contextlib.nullcontext()
    )
    try:
        with cache:
            result = process_unit(unit, settings)
    except (ModelError, DeviceError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        record = UnitRecord(
            **common,
            seconds=time.perf_counter() - start,
            error=f"chunk {_window_key(unit.chunk.core)}: {one_line(exc)}",
            maxrss_mb=_maxrss_mb(),
        )
        write_error_part(run_dir, record)
        return record
    buildings = result.buildings
    multi = bool(len(buildings)) and bool((buildings.geometry.geom_type == "MultiPolygon").any())
    predictor = get_predictor(settings)
    record = UnitRecord(
        **common,
        buildings=len(buildings),
        seconds=time.perf_counter() - start,
        device=str(predictor.device),
        maxrss_mb=_maxrss_mb(),
        multi=multi,
    )
    profile = None
    if result.probability is not None:
        info = unit.info
        profile = {"crs": info.crs, "transform": window_transform(unit.chunk.core, info.transform)}
    write_part(run_dir, record, buildings, result.probability, profile)
    return record


def _maxrss_mb() -> float:
    """Peak resident memory of this process (MiB).

    Linux: ``VmHWM`` of ``/proc/self/status``. ``ru_maxrss`` is not used there because it survives ``exec``: a
    worker spawned by a big client process would report the client's peak as its own.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def gdal_cache_mb(infos: list[RasterInfo], chunk_size: int, max_building_size_m: float) -> int:
    """GDAL block cache for one unit: twice its largest read window at 16 bits per band (at least 64 MiB)."""
    halo = max((halo_pixels(i, max_building_size_m) for i in infos), default=0)
    side = chunk_size + 2 * halo
    return max(64, int(np.ceil(2 * 3 * 2 * side * side / 2**20)))


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message (or type), whitespace squeezed."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text:
        return name
    return text if isinstance(exc, BldgsegError) else f"{name}: {text}"


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
        counts = Counter(m.crs.to_string() for m in members)
        if len(counts) < 2:
            continue
        best = max(counts.values())
        majority = next(m.crs.to_string() for m in members if counts[m.crs.to_string()] == best)
        for m in members:
            crs = m.crs.to_string()
            if crs != majority:
                left_out[m.path] = SkippedInput(
                    m.path,
                    f"{m.path.name}: mixed CRS in folder {folder}: this file is in {crs}, "
                    f"{counts[majority]} other file(s) in {majority}; reproject it "
                    f"(`gdalwarp -t_srs {majority} {m.path.name} out.tif`) or pass --crs to accept mixed CRSs",
                )
    kept = [i for i in infos if i.path not in left_out]
    return kept, [left_out[i.path] for i in infos if i.path in left_out]


def load_preloads(modules: Sequence[str]) -> None:
    """Import ``modules`` (dotted names or ``.py`` paths) in this process, e.g. to register architectures."""
    for name in modules:
        try:
            if name.endswith(".py") or os.sep in name:
                path = Path(name).resolve()
                spec = importlib.util.spec_from_file_location(path.stem, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules.setdefault(path.stem, module)
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except Exception as exc:
            raise InputError(
                f"--preload {name}: cannot be imported ({one_line(exc)}); check the name"
            ) from exc


def _preload_for_workers(modules: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(Path(m).resolve()) if m.endswith(".py") or os.sep in m else m for m in modules)


# ------------------------------------------------------------------------------------------------ runs


#: GDAL block cache of the client (MiB) while it scans inputs, assembles probability maps and merges: without a
#: cap GDAL keeps up to 5 % of RAM of decompressed blocks, e.g. of every tile the input scan touched.
CLIENT_GDAL_CACHE_MB = 128


def run(config: RunConfig, progress: ProgressFn | None = None) -> RunResult:
    """The main job: every input raster to one GeoPackage of buildings (or one per image)."""
    with rasterio.Env(GDAL_CACHEMAX=CLIENT_GDAL_CACHE_MB * 2**20):
        return _run(config, progress)


def _run(config: RunConfig, progress: ProgressFn | None) -> RunResult:
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    check_executor_options(workers=config.workers, scheduler=config.scheduler, cluster=config.cluster)
    load_preloads(config.preload)
    infos, skipped = scan_inputs(config.inputs, glob=config.glob, bands=config.bands)
    infos, mixed = split_mixed_crs(config, infos)
    errors = [RunError(s.path, s.reason, "scan") for s in skipped]
    errors += [RunError(s.path, s.reason, "crs") for s in mixed]
    skipped = skipped + mixed
    check_output(config, infos)
    if not infos:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise InputError(
            f"no usable input rasters among {len(skipped)} file(s) found{': ' + reasons if reasons else ''}"
        )
    card, settings = unit_settings(config, vectorize=True)
    settings.gdal_cache_mb = gdal_cache_mb(infos, config.chunk_size, config.max_building_size_m)
    units = plan_units(infos, config.chunk_size, config.max_building_size_m)
    rundir = prepare_run_dir(config, settings, card, _default_run_dir(config))
    stats = execute_units(config, settings, units, infos, rundir, progress)
    finished, failed = rundir.records([u.uid for u in units])
    errors += [
        RunError(Path(failed[u.uid].raster), failed[u.uid].error or "failed", "unit", u.uid)
        for u in units
        if u.uid in failed
    ]
    if config.save_masks is not None:
        write_probability_maps(infos, units, rundir, Path(config.save_masks), finished)
    crs = output_crs(infos, config.crs)
    records = [finished[u.uid] for u in units if u.uid in finished]
    metadata = run_metadata(
        config, card, settings, infos, errors, started, time.perf_counter() - t0, records, stats
    )
    metadata["buildings"] = sum(r.buildings for r in records)
    metadata["images"] = len(infos)
    output = write_outputs(config, units, rundir, finished, crs, metadata, errors)
    rundir.end_session(
        stats["completed"],
        stats["failed"],
        [str(p) for p in output] if isinstance(output, list) else str(output),
    )
    if rundir.temporary:
        rundir.remove()
    return RunResult(output, None, skipped, metadata, errors, crs)


def require_aerial_card(card: ModelCard) -> None:
    """Aerial runs need a building model with a ground sample distance (not, e.g., the street ``facade`` model)."""
    if card.gsd_m <= 0 or card.classes != ["building"]:
        raise ModelError(
            f"{card.name}: not an aerial building model (classes {', '.join(card.classes)}, GSD {card.gsd_m:g} m); "
            "use an aerial model such as aerial-buildings (street-level models go with bldgseg street)"
        )


def unit_settings(config: RunConfig, vectorize: bool) -> tuple[ModelCard, UnitSettings]:
    """The model card (checked to load) and the per-unit settings derived from ``config``."""
    _, card = load_checkpoint(config.model)
    require_aerial_card(card)
    model = config.model
    if Path(model).exists():  # a path: absolute, so that workers elsewhere find it
        model = str(Path(model).resolve())

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else Path(path).resolve()

    settings = UnitSettings(
        model=model,
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
        ndsm=absolute(config.ndsm),
        dsm=absolute(config.dsm),
        dtm=absolute(config.dtm),
        keep_probability=config.save_masks is not None,
        vectorize=vectorize,
        instances=use_instances(card, config.instances),
    )
    return card, settings


def use_instances(card: ModelCard, requested: bool | None) -> bool:
    """Whether a run groups instances: as requested, else when the card's head is "instance"."""
    if requested and card.head != "instance":
        raise ModelError(
            f"{card.name}: has no instance head (head: {card.head}); drop --instances or use an instance model "
            "trained with bldgseg train --instances"
        )
    return card.head == "instance" if requested is None else bool(requested)


def result_settings(config: RunConfig, settings: UnitSettings, card: ModelCard) -> dict[str, Any]:
    """What defines a run's results (hashed into the run directory's manifest; resume needs it unchanged).

    Device, batch size, executor, output and overwrite are left out: a run may be resumed elsewhere.
    """
    weights = resolve_checkpoint(settings.model)
    return {
        "model": card.name,
        "model_weights_sha256": file_digest(weights),
        "model_card_sha256": file_digest(weights.with_suffix(".json")),
        "bands": list(config.bands) if config.bands else None,
        "glob": config.glob,
        "tta": settings.tta,
        "threshold": settings.threshold,
        "tile_size": settings.tile_size,
        "overlap": settings.overlap,
        "min_area_m2": settings.min_area_m2,
        "simplify_m": settings.simplify_m,
        "regularize": settings.regularize,
        "texture": settings.texture,
        "ndsm": str(settings.ndsm) if settings.ndsm else None,
        "dsm": str(settings.dsm) if settings.dsm else None,
        "dtm": str(settings.dtm) if settings.dtm else None,
        "chunk_size": config.chunk_size,
        "max_building_size_m": config.max_building_size_m,
        "vectorize": settings.vectorize,
        "instances": settings.instances,
    }


def _default_run_dir(config: RunConfig) -> Path:
    if config.per_image:
        return Path(config.output) / ".bldgseg-run"
    output = Path(config.output)
    return output.with_name(f".{output.name}.run")


def prepare_run_dir(config: RunConfig, settings: UnitSettings, card: ModelCard, default: Path) -> RunDir:
    """The run directory: ``config.run_dir`` (kept), or ``default`` (hidden, removed after a successful run)."""
    explicit = config.run_dir is not None
    path = Path(config.run_dir if explicit else default).resolve()
    if config.resume and not explicit:
        raise InputError("--resume needs the run directory to continue; pass --resume RUN_DIR")
    values = result_settings(config, settings, card)
    overwrite = config.overwrite
    if not config.resume and not explicit and not _has_parts(path):
        overwrite = True  # an implicit run directory with nothing finished: nothing to lose
    # the default (hidden) folder is removed after success, also when it was named to resume it
    temporary = not explicit or path == Path(default).resolve()
    return RunDir.prepare(path, values, resume=config.resume, overwrite=overwrite, temporary=temporary)


def _has_parts(path: Path) -> bool:
    parts = path / "parts"
    return parts.is_dir() and any(p.suffix == ".gpkg" and not p.name.startswith(".") for p in parts.iterdir())


def execute_units(
    config: RunConfig,
    settings: UnitSettings,
    units: list[WorkUnit],
    infos: list[RasterInfo],
    rundir: RunDir,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """Run the units that have no finished part yet; every outcome lands in ``rundir`` as it arrives."""
    done = rundir.finished([u.uid for u in units], need_probability=settings.keep_probability)
    todo = [u for u in units if u.uid not in done]
    remote = bool(config.scheduler or config.workers or config.cluster)
    if not remote:
        resolve_device(config.device)  # fail fast, before any unit runs
    t_start = time.perf_counter()
    executor_context = (
        open_executor(
            threads=config.threads,
            workers=config.workers,
            scheduler=config.scheduler,
            cluster=config.cluster,
            slurm=config.slurm,
            device=config.device,
            preload=_preload_for_workers(config.preload),
        )
        if todo
        else contextlib.nullcontext(LocalExecutor(1))  # every unit already done: start no cluster
    )
    with executor_context as executor:
        t_ready = time.perf_counter()
        rundir.start_session(
            [_input_entry(i) for i in infos],
            [_unit_entry(u) for u in units],
            len(done),
            executor.description,
        )
        if executor.remote and todo:
            executor.check_paths(_paths_workers_need(settings, infos, rundir))
        settings = replace(settings, torch_threads=executor.torch_threads)
        resources = executor.task_resources(settings.device) if todo else None
        count, completed, failed = len(done), 0, 0
        if progress:
            progress("chunks", count, len(units))
        for unit, outcome in executor.map_units(
            run_unit, todo, settings, str(rundir.path), resources=resources
        ):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, (ModelError, DeviceError)):
                    raise outcome
                write_error_part(
                    rundir.path,
                    UnitRecord(
                        uid=unit.uid,
                        raster=str(unit.info.path),
                        error=f"chunk {_window_key(unit.chunk.core)}: {describe_failure(outcome)}",
                    ),
                )
                failed += 1
            elif outcome.error:
                failed += 1
            else:
                completed += 1
            count += 1
            if progress:
                progress("chunks", count, len(units))
        t_done = time.perf_counter()
    return {
        "executor": executor.description,
        "units": len(units),
        "resumed": len(done),
        "completed": completed,
        "failed": failed,
        "seconds_cluster_start": round(t_ready - t_start, 2),
        "seconds_processing": round(t_done - t_ready, 2),
    }


def describe_failure(exc: BaseException) -> str:
    """A unit failure seen by the client, e.g. a worker that died on it every time it was tried."""
    if type(exc).__name__ == "KilledWorker":
        return (
            f"the worker running it died each time it was tried ({one_line(exc)}); "
            "often out of memory: use a smaller --chunk-size or workers with more memory"
        )
    return one_line(exc)


def _paths_workers_need(settings: UnitSettings, infos: list[RasterInfo], rundir: RunDir) -> list[str]:
    paths = [str(i.path) for i in infos] + [str(rundir.parts)]
    if Path(settings.model).exists():
        paths.append(settings.model)
    paths += [str(p) for p in (settings.ndsm, settings.dsm, settings.dtm) if p is not None]
    return paths


def _input_entry(info: RasterInfo) -> dict[str, Any]:
    return {
        "path": str(info.path),
        "identity": _file_identity(info.path),
        "crs": info.crs.to_string(),
        "width": info.width,
        "height": info.height,
    }


def _unit_entry(unit: WorkUnit) -> dict[str, Any]:
    return {
        "uid": unit.uid,
        "raster": str(unit.info.path),
        "core": _window_key(unit.chunk.core),
        "read": _window_key(unit.chunk.read),
    }


def write_probability_maps(
    infos: list[RasterInfo],
    units: list[WorkUnit],
    rundir: RunDir,
    folder: Path,
    finished: dict[str, UnitRecord],
) -> list[Path]:
    """One probability COG per raster in ``folder``, assembled chunk by chunk from the units' parts."""
    stems = unique_stems([info.path for info in infos])
    by_raster: dict[Path, list[WorkUnit]] = defaultdict(list)
    for unit in units:
        by_raster[unit.info.path].append(unit)
    written = []
    for info in infos:
        writer = ProbabilityMapWriter(info, Path(folder) / f"{stems[info.path]}.probability.tif")
        try:
            for unit in by_raster[info.path]:
                _gpkg, prob_tif, _error = part_paths(rundir.path, unit.uid)
                if unit.uid not in finished or not prob_tif.exists():
                    continue  # a failed unit stays 0
                with rasterio.open(prob_tif) as ds:
                    scaled = ds.read(1)
                writer.write(scaled.astype(np.float32) / 255.0, unit.chunk.core)
        except BaseException:
            writer.abort()
            raise
        written.append(writer.close())
    return written


def predict_rasters(
    config: RunConfig, progress: ProgressFn | None = None
) -> tuple[list[Path], list[SkippedInput]]:
    """Probability COGs only (``bldgseg predict``): one per input in ``config.save_masks``."""
    with rasterio.Env(GDAL_CACHEMAX=CLIENT_GDAL_CACHE_MB * 2**20):
        return _predict_rasters(config, progress)


def _predict_rasters(config: RunConfig, progress: ProgressFn | None) -> tuple[list[Path], list[SkippedInput]]:
    load_preloads(config.preload)
    infos, skipped = scan_inputs(config.inputs, glob=config.glob, bands=config.bands)
    if not infos:
        raise InputError(f"no usable input rasters among {len(skipped)} file(s) found")
    stems = unique_stems([info.path for info in infos])
    folder = Path(config.save_masks)
    targets = [folder / f"{stems[i.path]}.probability.tif" for i in infos]
    existing = [t for t in targets if t.exists()]
    if existing and not config.overwrite:
        raise OutputExistsError(f"{existing[0]}: already exists; pass --overwrite or choose another folder")
    card, settings = unit_settings(config, vectorize=False)
    settings.gdal_cache_mb = gdal_cache_mb(infos, config.chunk_size, config.max_building_size_m)
    units = plan_units(infos, config.chunk_size, config.max_building_size_m)
    rundir = prepare_run_dir(config, settings, card, folder / ".bldgseg-predict-run")
    stats = execute_units(config, settings, units, infos, rundir, progress)
    finished, _failed = rundir.records([u.uid for u in units])
    write_probability_maps(infos, units, rundir, folder, finished)
    rundir.end_session(stats["completed"], stats["failed"], [str(t) for t in targets])
    if rundir.temporary:
        rundir.remove()
    return targets, skipped


def merge_frames(parts: list[gpd.GeoDataFrame], crs: Any) -> gpd.GeoDataFrame:
    """Concatenate building frames, reprojecting each to ``crs``."""
    frames = [p.to_crs(crs) for p in parts if len(p)]
    if not frames:
        return empty_buildings(crs)
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=crs)


def empty_buildings(crs: Any) -> gpd.GeoDataFrame:
    """An empty ``buildings`` frame with every column."""
    return order_columns(
        gpd.GeoDataFrame({"geometry": gpd.GeoSeries([], crs=crs)}, geometry="geometry", crs=crs)
    )


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


def run_metadata(
    config: RunConfig,
    card: ModelCard,
    settings: UnitSettings,
    infos: list[RasterInfo],
    errors: list[RunError],
    started: datetime,
    seconds: float,
    records: list[UnitRecord],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """The row of the ``runs`` table."""
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "inputs"}
    params.update(threshold=settings.threshold, instances=settings.instances, output=str(config.output))
    devices = sorted({r.device for r in records if r.device})
    return {
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bldgseg_version": __version__,
        "torch_version": torch.__version__,
        "device": ",".join(devices) or config.device,
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
        "errors": json.dumps([{"path": str(e.path), "reason": e.reason, "stage": e.stage} for e in errors]),
        "executor": stats["executor"],
        "units": stats["units"],
        "units_resumed": stats["resumed"],
        "units_failed": sum(1 for e in errors if e.stage == "unit"),
        "workers": len({(r.host, r.pid) for r in records}),
        "peak_worker_rss_mb": max((r.maxrss_mb for r in records), default=0.0),
        "seconds_total": round(seconds, 2),
        "seconds_cluster_start": stats["seconds_cluster_start"],
        "seconds_processing": stats["seconds_processing"],
        "seconds_in_units": round(sum(r.seconds for r in records), 2),
    }


def errors_frame(errors: list[RunError]) -> pd.DataFrame:
    """The ``errors`` table: one row per file left out or unit failed, with the one-line reason."""
    return pd.DataFrame(
        {
            "path": [str(e.path) for e in errors],
            "reason": [e.reason for e in errors],
            "stage": [e.stage for e in errors],
            "unit": [e.unit for e in errors],
        },
        columns=ERROR_COLUMNS,
        dtype="string",
    )


def write_outputs(
    config: RunConfig,
    units: list[WorkUnit],
    rundir: RunDir,
    finished: dict[str, UnitRecord],
    crs: Any,
    metadata: dict[str, Any],
    errors: list[RunError],
) -> Path | list[Path]:
    """Merge the parts into one GeoPackage, or one per input image into the ``output`` folder."""
    tables = {"runs": pd.DataFrame([metadata]), "errors": errors_frame(errors)}
    empty = empty_buildings(crs)

    def parts_of(selected: list[WorkUnit]) -> tuple[list[Path], bool]:
        chosen = [u for u in selected if u.uid in finished]
        multi = any(finished[u.uid].multi for u in chosen)
        return [part_paths(rundir.path, u.uid)[0] for u in chosen], multi

    if not config.per_image:
        parts, multi = parts_of(units)
        merge_buildings(config.output, parts, crs, empty, tables, overwrite=config.overwrite, multi=multi)
        return config.output
    Path(config.output).mkdir(parents=True, exist_ok=True)
    by_raster: dict[Path, list[WorkUnit]] = defaultdict(list)
    for unit in units:
        by_raster[unit.info.path].append(unit)
    targets = per_image_targets(config, list(by_raster))
    written = []
    for path, selected in by_raster.items():
        parts, multi = parts_of(selected)
        merge_buildings(targets[path], parts, crs, empty, tables, overwrite=config.overwrite, multi=multi)
        written.append(targets[path])
    return written
