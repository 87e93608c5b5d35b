"""Worker side of a run: the cached predictor, one chunk predicted, vectorized, measured and saved as a part."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.windows import transform as window_transform

from bldgseg.devices import device_type, resolve_device
from bldgseg.errors import BldgsegError, DeviceError, ModelError
from bldgseg.files import file_digest
from bldgseg.inference import Predictor
from bldgseg.instances import label_instances
from bldgseg.modelgrid import ModelGrid, model_scale
from bldgseg.models import int8_ir_of, load_card
from bldgseg.overlap import StageGate, stage_gate
from bldgseg.pipeline.bands import measure_unit
from bldgseg.pipeline.config import UnitSettings
from bldgseg.pipeline.outputs import order_columns
from bldgseg.pipeline.plan import WorkUnit, window_key
from bldgseg.resample import maps_to_source, read_model_region, valid_to_source
from bldgseg.runstate import UnitRecord, write_error_part, write_part


@dataclass
class UnitResult:
    unit: WorkUnit
    buildings: gpd.GeoDataFrame
    probability: np.ndarray | None
    seconds: float


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
        settings.precision,
        settings.engine,
    )
    with _PREDICTOR_LOCK:
        if key not in _PREDICTORS:
            weights, card = load_card(settings.model)
            digest = file_digest(weights)
            _PREDICTORS[key] = Predictor(
                functools.partial(_load_model, settings.model),
                card,
                worker_device(settings.device),
                settings.batch_size,
                settings.tta,
                settings.tile_size,
                settings.overlap,
                precision=settings.precision,
                engine=settings.engine,
                weights_file=digest,
                int8_ir=int8_ir_of(weights, card, digest),
                threads=settings.torch_threads,
            )
        return _PREDICTORS[key]


def _load_model(name_or_path: str) -> Any:
    """The checkpoint's torch model (imports segmentation_models_pytorch and timm: only when needed)."""
    from bldgseg.models import load_checkpoint

    return load_checkpoint(name_or_path)[0]


def worker_device(name: str) -> str:
    """The device of this process (a ``--device`` name); a LocalCluster worker *i* on a multi-GPU machine takes
    GPU *i* mod count. A CPU device is named without importing torch."""
    if device_type(name) == "cpu":
        return "cpu"
    import torch

    device = resolve_device(name)
    if device.index is None and torch.cuda.device_count() > 1:
        index = _local_worker_index()
        if index is not None:
            return f"cuda:{index % torch.cuda.device_count()}"
    return str(device)


def _local_worker_index() -> int | None:
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return name if isinstance(name, int) else None


def predict_chunk(
    unit: WorkUnit,
    predictor: Predictor,
    instances: bool = False,
    threshold: float | None = None,
    model_gate: StageGate | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Probability, validity and (with ``instances``) instance labels on the source grid of the unit's read
    window. ``threshold``: the card's if None. ``model_gate``: held while the model runs (the chunk is read
    before, and its maps resampled after, so other units' models can run meanwhile).

    The chunk runs its part of the raster's own model grid (:mod:`bldgseg.modelgrid`): the windows of a
    whole-raster run that touch it, on model pixels resampled exactly as for the whole raster, and its maps are
    resampled back in the raster's coordinates, so every pixel comes out as in a single-chunk run whatever the
    chunk size (up to floating-point effects of batch composition and thread count, see docs/architecture.md).
    Offsets are rescaled to the source grid, so building pixels are the same with or without instances.
    """
    info, read = unit.info, unit.chunk.read
    scale = model_scale(info.gsd_m, predictor.card.gsd_m)
    grid = ModelGrid.for_raster(info.height, info.width, scale, predictor.tile_size, predictor.overlap)
    region = grid.chunk_region(read)
    rgb, model_valid = read_model_region(info, grid, region.model)
    origin = (int(region.model.row_off), int(region.model.col_off))
    with (model_gate or StageGate(None)).held():
        if instances:
            maps = predictor.predict_instances(rgb, model_valid, layout=region.layout)
        else:
            maps = predictor.predict(rgb, model_valid, layout=region.layout)[None]
    del rgb
    maps = maps_to_source(maps, grid, origin, read, offset_channels=(2, 3) if instances else None)
    valid = valid_to_source(model_valid, grid, origin, read)
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


def process_unit(unit: WorkUnit, settings: UnitSettings) -> UnitResult:
    """Predict, vectorize and measure one work unit (in memory; :func:`run_unit` persists it)."""
    start = time.perf_counter()
    predictor = get_predictor(settings)
    grouped = settings.instances and settings.vectorize  # probability maps alone need no grouping
    gate = stage_gate("model", settings.model_slots)
    prob, _, labels = predict_chunk(unit, predictor, grouped, settings.threshold, gate)
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
    chunk = unit.chunk
    buildings = measure_unit(prob, labels, info, read, chunk.core, settings, predictor.card.name, unit.tiles)
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
            error=f"chunk {window_key(unit.chunk.core)}: {one_line(exc)}",
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
        precision=predictor.inference.precision,
        engine=predictor.inference.engine,
        inference_reason=predictor.inference.reason,
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


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message (or type), whitespace squeezed."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text:
        return name
    return text if isinstance(exc, BldgsegError) else f"{name}: {text}"
