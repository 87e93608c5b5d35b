"""The jobs: ``run`` (rasters to GeoPackages of buildings) and ``predict_rasters`` (probability COGs only).

Files that touch on one pixel grid are first grouped into mosaics (:mod:`bldgseg.mosaic`, a VRT per group in the
run directory) unless ``separate``; a mosaic is one raster to everything after that. A work unit is one chunk
(core + halo) of one raster. Each unit runs on an executor (local threads by default,
a LocalCluster of processes with ``workers``, an existing Dask cluster with ``scheduler``, SLURM with
``cluster="slurm"``, see :mod:`bldgseg.executors`), which predicts, vectorizes and measures it and writes the
buildings it owns as a part file in the run directory (:mod:`bldgseg.runstate`). Only small records travel
back to the client. When every unit is done the parts are merged, in unit order, into the output GeoPackage
(atomically), so the result does not depend on the executor or on the order units finished in.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rasterio

from bldgseg.errors import InputError
from bldgseg.executors import check_executor_options
from bldgseg.files import refuse_existing_any
from bldgseg.io import RasterInfo, SkippedInput, open_raster_info, scan_inputs
from bldgseg.models import ModelCard
from bldgseg.mosaic import Mosaic, write_vrt
from bldgseg.pipeline.config import RunConfig, UnitSettings, unit_settings
from bldgseg.pipeline.execute import execute_units, load_preloads, prepare_run_dir, run_dir_path
from bldgseg.pipeline.outputs import (
    RunError,
    RunResult,
    check_output,
    probability_targets,
    run_metadata,
    write_outputs,
    write_probability_maps,
)
from bldgseg.pipeline.plan import (
    RasterPlan,
    WorkUnit,
    gdal_cache_mb,
    model_reach,
    output_crs,
    plan_rasters,
    plan_units,
    split_mixed_crs,
)
from bldgseg.progress import ProgressFn
from bldgseg.remote import as_raster_path
from bldgseg.runstate import RunDir, UnitRecord

#: GDAL block cache of the client (MiB) while it scans inputs, assembles probability maps and merges: without a
#: cap GDAL keeps up to 5 % of RAM of decompressed blocks, e.g. of every tile the input scan touched.
CLIENT_GDAL_CACHE_MB = 128


@dataclass
class Execution:
    """The executed part of a job: its settings, units, run directory, and which units finished or failed."""

    card: ModelCard
    settings: UnitSettings
    units: list[WorkUnit]
    rundir: RunDir
    stats: dict[str, Any]
    finished: dict[str, UnitRecord]
    failed: dict[str, UnitRecord]
    #: What was processed: single files and mosaic VRTs, in order.
    rasters: list[RasterInfo] = field(default_factory=list)
    mosaics: dict[Path, Mosaic] = field(default_factory=dict)

    def close(self, outputs: str | list[str]) -> None:
        """Record the session's end, and remove a temporary run directory (the job is complete)."""
        self.rundir.end_session(self.stats["completed"], self.stats["failed"], outputs)
        if self.rundir.temporary:
            self.rundir.remove()


def run(config: RunConfig, progress: ProgressFn | None = None) -> RunResult:
    """The main job: every input raster to one GeoPackage of buildings (or one per image)."""
    with _client_gdal_cache():
        return _run(config, progress)


def predict_rasters(
    config: RunConfig, progress: ProgressFn | None = None
) -> tuple[list[Path], list[SkippedInput]]:
    """Probability COGs only (``bldgseg predict``): one per input in ``config.save_masks``."""
    with _client_gdal_cache():
        return _predict_rasters(config, progress)


def _client_gdal_cache() -> rasterio.Env:
    return rasterio.Env(GDAL_CACHEMAX=CLIENT_GDAL_CACHE_MB * 2**20)


def _scan(config: RunConfig, run_dir: Path) -> tuple[list[RasterInfo], list[SkippedInput]]:
    """Import the preloaded modules, then find and check the input rasters (none from the run directory)."""
    load_preloads(config.preload)
    infos, skipped = scan_inputs(config.inputs, glob=config.glob, bands=config.bands)
    return [i for i in infos if not i.path.is_relative_to(run_dir)], skipped


def _open_rasters(plan: RasterPlan) -> list[RasterInfo]:
    """The rasters to process, each mosaic's VRT written (unless unchanged) and opened."""
    by_path = {i.path: i for i in plan.infos}
    mosaics = {m.path: m for m in plan.mosaics}
    rasters = []
    for path in plan.paths:
        if path in mosaics:
            rasters.append(open_raster_info(write_vrt(mosaics[path]), mosaics[path].bands))
        else:
            rasters.append(by_path[path])
    return rasters


def _execute(
    config: RunConfig,
    plan: RasterPlan,
    vectorize: bool,
    default_run_dir: Path,
    progress: ProgressFn | None,
) -> Execution:
    """The middle of every job: settings, run directory, mosaics, work units, then every unit not finished run."""
    card, settings = unit_settings(config, vectorize=vectorize)
    rundir = prepare_run_dir(config, settings, card, default_run_dir)
    rasters = _open_rasters(plan)
    mosaics = {m.path: m for m in plan.mosaics}
    settings.gdal_cache_mb = gdal_cache_mb(rasters, config.chunk_size, config.max_building_size_m)
    reach = model_reach(
        card.gsd_m,
        settings.tile_size or card.tile_size,
        card.overlap if settings.overlap is None else settings.overlap,
    )
    units = plan_units(rasters, config.chunk_size, config.max_building_size_m, mosaics, reach)
    stats = execute_units(config, settings, units, rasters, rundir, progress, mosaics)
    finished, failed = rundir.records([u.uid for u in units])
    return Execution(card, settings, units, rundir, stats, finished, failed, rasters, mosaics)


def _run(config: RunConfig, progress: ProgressFn | None) -> RunResult:
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    check_executor_options(workers=config.workers, scheduler=config.scheduler, cluster=config.cluster)
    default_run_dir = _default_run_dir(config)
    infos, skipped, errors = _run_inputs(config, run_dir_path(config, default_run_dir))
    plan = plan_rasters(config, infos, run_dir_path(config, default_run_dir))
    job = _execute(config, plan, True, default_run_dir, progress)
    errors += _unit_errors(job)
    if config.save_masks is not None:
        write_probability_maps(job.rasters, job.units, job.rundir, Path(config.save_masks), job.finished)
    crs = output_crs(infos, config.crs)
    records = [job.finished[u.uid] for u in job.units if u.uid in job.finished]
    metadata = run_metadata(
        config, job.card, job.settings, infos, errors, started, time.perf_counter() - t0, records, job.stats
    )
    metadata["buildings"] = sum(r.buildings for r in records)
    metadata["images"] = len(infos)
    metadata["mosaics"] = json.dumps([m.summary() for m in plan.mosaics])
    output = write_outputs(config, job.units, job.rundir, job.finished, crs, metadata, errors, infos)
    job.close([str(p) for p in output] if isinstance(output, list) else str(output))
    return RunResult(output, None, skipped, metadata, errors, crs)


def _unit_errors(job: Execution) -> list[RunError]:
    """A row of ``errors`` per failed unit; a mosaic's unit names the tiles under its chunk."""
    errors = []
    for unit in job.units:
        record = job.failed.get(unit.uid)
        if record is None:
            continue
        reason = record.error or "failed"
        if unit.tiles:
            names = ", ".join(t.path.name for t in unit.tiles)
            reason = f"{Path(record.raster).stem} (tiles {names}): {reason}"
        errors.append(RunError(as_raster_path(record.raster), reason, "unit", unit.uid))
    return errors


def _run_inputs(
    config: RunConfig, run_dir: Path
) -> tuple[list[RasterInfo], list[SkippedInput], list[RunError]]:
    """The rasters a run uses, the files it leaves out (unreadable, or in a folder's minority CRS) as
    errors, after refusing an existing output."""
    infos, skipped = _scan(config, run_dir)
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
    return infos, skipped, errors


def _default_run_dir(config: RunConfig) -> Path:
    if config.per_image:
        return Path(config.output) / ".bldgseg-run"
    output = Path(config.output)
    return output.with_name(f".{output.name}.run")


def _predict_rasters(config: RunConfig, progress: ProgressFn | None) -> tuple[list[Path], list[SkippedInput]]:
    folder = Path(config.save_masks)
    default_run_dir = folder / ".bldgseg-predict-run"
    infos, skipped = _scan(config, run_dir_path(config, default_run_dir))
    if not infos:
        raise InputError(f"no usable input rasters among {len(skipped)} file(s) found")
    plan = plan_rasters(config, infos, run_dir_path(config, default_run_dir))
    by_path = probability_targets(folder, plan.paths)
    targets = [by_path[p] for p in plan.paths]
    refuse_existing_any(targets, config.overwrite)
    job = _execute(config, plan, False, default_run_dir, progress)
    write_probability_maps(job.rasters, job.units, job.rundir, folder, job.finished)
    job.close([str(t) for t in targets])
    return targets, skipped
