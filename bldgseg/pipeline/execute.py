"""Execution: the run directory, preloaded modules, and the work units run on an executor as they finish."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bldgseg.band_helpers import start_helpers, stop_helpers
from bldgseg.devices import check_device
from bldgseg.errors import DeviceError, InputError, ModelError
from bldgseg.executors import Executor, LocalExecutor, open_executor
from bldgseg.io import RasterInfo
from bldgseg.models import ModelCard
from bldgseg.mosaic import Mosaic
from bldgseg.pipeline.bands import units_in_bands
from bldgseg.pipeline.config import RunConfig, UnitSettings, result_settings
from bldgseg.pipeline.plan import WorkUnit, file_identity, window_key
from bldgseg.pipeline.unit import one_line, run_unit
from bldgseg.progress import ProgressFn
from bldgseg.runstate import RunDir, UnitRecord, write_error_part


def run_dir_path(config: RunConfig, default: Path) -> Path:
    """Where the run directory is: ``config.run_dir``, else ``default`` (absolute)."""
    return Path(config.run_dir if config.run_dir is not None else default).resolve()


def prepare_run_dir(config: RunConfig, settings: UnitSettings, card: ModelCard, default: Path) -> RunDir:
    """The run directory: ``config.run_dir`` (kept), or ``default`` (hidden, removed after a successful run)."""
    explicit = config.run_dir is not None
    path = run_dir_path(config, default)
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
    mosaics: Mapping[Path, Mosaic] | None = None,
) -> dict[str, Any]:
    """Run the units that have no finished part yet; every outcome lands in ``rundir`` as it arrives.

    ``infos`` are the rasters processed; those that are ``mosaics`` (by VRT path) list their tiles in the
    manifest, and workers must see the tiles too.
    """
    mosaics = mosaics or {}
    done = rundir.finished([u.uid for u in units], need_probability=settings.keep_probability)
    todo = [u for u in units if u.uid not in done]
    remote = bool(config.scheduler or config.workers or config.cluster)
    if not remote:
        check_device(config.device)  # fail fast, before any unit runs
    t_start = time.perf_counter()
    with _open_executor(config, todo) as executor:
        t_ready = time.perf_counter()
        rundir.start_session(
            [_input_entry(i, mosaics.get(i.path)) for i in infos],
            [_unit_entry(u) for u in units],
            len(done),
            executor.description,
        )
        if executor.remote and todo:
            executor.check_paths(_paths_workers_need(settings, infos, rundir, mosaics))
        settings = replace(
            settings,
            torch_threads=executor.torch_threads,
            model_slots=executor.model_slots,
            post_processes=executor.post_processes if settings.vectorize and todo else 0,
        )
        if units_in_bands(todo, settings):
            start_helpers(settings.post_processes)
        try:
            completed, failed = _run_todo(executor, settings, todo, len(done), len(units), rundir, progress)
        finally:
            stop_helpers()
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


def _open_executor(config: RunConfig, todo: list[WorkUnit]) -> contextlib.AbstractContextManager[Executor]:
    """The configured executor, or (every unit already done) a local one that starts no cluster."""
    if not todo:
        return contextlib.nullcontext(LocalExecutor(1))
    return open_executor(
        threads=config.threads,
        workers=config.workers,
        scheduler=config.scheduler,
        cluster=config.cluster,
        slurm=config.slurm,
        device=config.device,
        preload=_preload_for_workers(config.preload),
    )


def _run_todo(
    executor: Executor,
    settings: UnitSettings,
    todo: list[WorkUnit],
    resumed: int,
    total: int,
    rundir: RunDir,
    progress: ProgressFn | None,
) -> tuple[int, int]:
    """Run ``todo`` on ``executor``, reporting progress over all ``total`` units; (completed, failed) counts."""
    resources = executor.task_resources(settings.device) if todo else None
    count, completed, failed = resumed, 0, 0
    if progress:
        progress("chunks", count, total)
    for unit, outcome in executor.map_units(run_unit, todo, settings, str(rundir.path), resources=resources):
        if _record_outcome(unit, outcome, rundir):
            completed += 1
        else:
            failed += 1
        count += 1
        if progress:
            progress("chunks", count, total)
    return completed, failed


def _record_outcome(unit: WorkUnit, outcome: UnitRecord | BaseException, rundir: RunDir) -> bool:
    """Whether the unit succeeded; a failure seen only by the client (e.g. a dead worker) gets an error part.

    Model and device errors are raised: they would fail every unit.
    """
    if isinstance(outcome, BaseException):
        if isinstance(outcome, (ModelError, DeviceError)):
            raise outcome
        write_error_part(
            rundir.path,
            UnitRecord(
                uid=unit.uid,
                raster=str(unit.info.path),
                error=f"chunk {window_key(unit.chunk.core)}: {describe_failure(outcome)}",
            ),
        )
        return False
    return not outcome.error


def describe_failure(exc: BaseException) -> str:
    """A unit failure seen by the client, e.g. a worker that died on it every time it was tried."""
    if type(exc).__name__ == "KilledWorker":
        return (
            f"the worker running it died each time it was tried ({one_line(exc)}); "
            "often out of memory: use a smaller --chunk-size or workers with more memory"
        )
    return one_line(exc)


def _paths_workers_need(
    settings: UnitSettings, infos: list[RasterInfo], rundir: RunDir, mosaics: Mapping[Path, Mosaic]
) -> list[str]:
    paths = [str(i.path) for i in infos] + [str(rundir.parts)]
    paths += [str(t.path) for m in mosaics.values() for t in m.tiles]
    if Path(settings.model).exists():
        paths.append(settings.model)
    paths += [str(p) for p in (settings.ndsm, settings.dsm, settings.dtm) if p is not None]
    return paths


def _input_entry(info: RasterInfo, mosaic: Mosaic | None = None) -> dict[str, Any]:
    """A raster in the manifest; a mosaic with the identity (path, size, mtime) of each tile."""
    entry: dict[str, Any] = {
        "path": str(info.path),
        "identity": file_identity(info.path),
        "crs": info.crs.to_string(),
        "width": info.width,
        "height": info.height,
    }
    if mosaic is not None:
        entry["mosaic"] = mosaic.name
        entry["tiles"] = [{"path": str(t.path), "identity": file_identity(t.path)} for t in mosaic.tiles]
    return entry


def _unit_entry(unit: WorkUnit) -> dict[str, Any]:
    return {
        "uid": unit.uid,
        "raster": str(unit.info.path),
        "core": window_key(unit.chunk.core),
        "read": window_key(unit.chunk.read),
    }


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
