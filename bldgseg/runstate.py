"""The run directory: one part file per finished work unit, a manifest, resume, and the atomic final merge.

Layout::

    RUN_DIR/manifest.json          inputs, the configuration (and its hash), the work units, one entry per session
    RUN_DIR/parts/<uid>.gpkg       a finished unit: layer ``buildings`` (source CRS) and table ``unit`` (one row)
    RUN_DIR/parts/<uid>.prob.tif   its probability core (uint8, x255), only when probability maps are kept
    RUN_DIR/parts/<uid>.error.json a unit that failed (bad pixels...): retried by the next ``--resume``
    RUN_DIR/mosaics/<name>.vrt     the VRT of each mosaic of touching input files (see :mod:`bldgseg.mosaic`)

Workers write parts themselves (to a hidden temporary name, then ``os.replace``), so a part is either complete or
absent, and a unit that is run twice (a worker presumed dead, a resumed run) just replaces its part with an
identical one. The ``.gpkg`` is written last: it is the unit's "done" marker. The client only reads the
manifest and the parts' small ``unit`` tables until the final merge, which streams parts into the output
GeoPackage's temporary file and renames it into place (see :mod:`bldgseg.export`); GeoParquet and FlatGeobuf
outputs are converted from such a GeoPackage (see :mod:`bldgseg.vector_formats`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio

from bldgseg import __version__
from bldgseg.errors import InputError, OutputExistsError
from bldgseg.export import (
    EMPTY_LAYER_GEOMETRY_TYPE,
    GPKG_VERSION,
    check_frames,
    default_building_style,
    write_styles,
)
from bldgseg.files import GPKG_SIDECARS, atomic_replace, atomic_write, refuse_existing
from bldgseg.vector_formats import convert_layer, output_format, refuse_existing_outputs

__all__ = [
    "MANIFEST",
    "MOSAICS",
    "RunDir",
    "UnitRecord",
    "config_hash",
    "merge_buildings",
    "read_part",
    "write_error_part",
    "write_part",
]

MANIFEST = "manifest.json"
PARTS = "parts"
#: Sub-folder of the run directory holding the mosaics' VRTs.
MOSAICS = "mosaics"
FORMAT = 1
_SQLITE_LOCK = threading.Lock()
#: Rows written per call while merging parts into the output (bounds the client's memory).
MERGE_BATCH_ROWS = 20_000


def config_hash(values: Mapping[str, Any]) -> str:
    """A stable hash of the result-defining configuration (JSON, sorted keys)."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class UnitRecord:
    """The small facts about one finished (or failed) unit that the client keeps."""

    uid: str
    raster: str
    buildings: int = 0
    seconds: float = 0.0
    error: str | None = None
    device: str = ""
    host: str = ""
    pid: int = 0
    maxrss_mb: float = 0.0
    multi: bool = False
    #: The precision and engine the unit ran with, and why (:class:`bldgseg.precision.InferenceChoice`).
    precision: str = ""
    engine: str = ""
    inference_reason: str = ""

    def to_row(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "raster": self.raster,
            "buildings": int(self.buildings),
            "seconds": float(self.seconds),
            "device": self.device,
            "host": self.host,
            "pid": int(self.pid),
            "maxrss_mb": float(self.maxrss_mb),
            "multi": int(self.multi),
            "precision": self.precision,
            "engine": self.engine,
            "inference_reason": self.inference_reason,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UnitRecord:
        return cls(
            uid=str(row["uid"]),
            raster=str(row["raster"]),
            buildings=int(row["buildings"]),
            seconds=float(row["seconds"]),
            device=str(row.get("device", "") or ""),
            host=str(row.get("host", "") or ""),
            pid=int(row.get("pid", 0) or 0),
            maxrss_mb=float(row.get("maxrss_mb", 0.0) or 0.0),
            multi=bool(int(row.get("multi", 0) or 0)),
            precision=str(row.get("precision", "") or ""),
            engine=str(row.get("engine", "") or ""),
            inference_reason=str(row.get("inference_reason", "") or ""),
        )


# ------------------------------------------------------------------------------------- worker side


def _replace_atomically(dest: Path, suffix: str, build) -> None:
    """``build(tmp)`` a hidden sibling, fsync it, rename it onto ``dest``: ``dest`` is whole or absent."""
    atomic_replace(dest, build, suffix, sidecars=("-journal",), sync_folder=False)


def part_paths(run_dir: str | os.PathLike[str], uid: str) -> tuple[Path, Path, Path]:
    """``(gpkg, prob.tif, error.json)`` of unit ``uid``."""
    parts = Path(run_dir) / PARTS
    return parts / f"{uid}.gpkg", parts / f"{uid}.prob.tif", parts / f"{uid}.error.json"


def write_part(
    run_dir: str | os.PathLike[str],
    record: UnitRecord,
    buildings: gpd.GeoDataFrame,
    probability: np.ndarray | None = None,
    prob_profile: Mapping[str, Any] | None = None,
) -> Path:
    """Persist one finished unit (runs on the worker): probability core first, then the ``.gpkg`` marker."""
    gpkg, prob_tif, error = part_paths(run_dir, record.uid)
    gpkg.parent.mkdir(parents=True, exist_ok=True)
    if probability is not None:
        profile = dict(prob_profile or {})
        profile.update(
            driver="GTiff",
            count=1,
            dtype="uint8",
            height=probability.shape[0],
            width=probability.shape[1],
            compress="deflate",
            tiled=probability.shape[0] >= 256 and probability.shape[1] >= 256,
        )
        if profile["tiled"]:
            profile.update(blockxsize=256, blockysize=256)
        scaled = np.clip(np.rint(probability * 255), 0, 255).astype(np.uint8)

        def build_prob(tmp: Path) -> None:
            with rasterio.open(tmp, "w", **profile) as ds:
                ds.write(scaled, 1)

        _replace_atomically(prob_tif, ".tif", build_prob)

    def build_gpkg(tmp: Path) -> None:
        frame = buildings
        kwargs: dict[str, Any] = {"driver": "GPKG", "layer": "buildings", "SPATIAL_INDEX": "NO"}
        if not frame.geometry.notna().any():
            kwargs["geometry_type"] = EMPTY_LAYER_GEOMETRY_TYPE
        elif record.multi:
            kwargs["geometry_type"] = "MultiPolygon"
            kwargs["promote_to_multi"] = True
        pyogrio.write_dataframe(frame, tmp, **kwargs)
        pyogrio.write_dataframe(
            pd.DataFrame([record.to_row()]), tmp, driver="GPKG", layer="unit", append=False
        )

    with _unsynchronised_sqlite():
        _replace_atomically(gpkg, ".gpkg", build_gpkg)
    error.unlink(missing_ok=True)
    return gpkg


@contextlib.contextmanager
def _unsynchronised_sqlite():
    """SQLite without its own fsyncs while a part is built (6x faster); the file is fsynced once, whole."""
    with _SQLITE_LOCK:
        before = pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS")
        pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": "OFF"})
        try:
            yield
        finally:
            pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": before})


def write_error_part(run_dir: str | os.PathLike[str], record: UnitRecord) -> Path:
    """Persist a failed unit's reason (worker or client side); a later finished part supersedes it."""
    _gpkg, _prob, error = part_paths(run_dir, record.uid)
    error.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**record.to_row(), "error": record.error})
    _replace_atomically(error, ".json", lambda tmp: tmp.write_text(text))
    return error


def read_part(path: Path) -> tuple[UnitRecord, gpd.GeoDataFrame]:
    """A part's record and buildings (in the source CRS)."""
    return read_record(path), pyogrio.read_dataframe(path, layer="buildings")


def read_record(path: Path) -> UnitRecord:
    table = pyogrio.read_dataframe(path, layer="unit")
    return UnitRecord.from_row(table.iloc[0].to_dict())


# ------------------------------------------------------------------------------------- client side


class RunDir:
    """A run directory (see the module docstring). Create with :meth:`prepare`."""

    def __init__(self, path: Path, temporary: bool = False):
        self.path = Path(path).absolute()
        self.parts = self.path / PARTS
        self.temporary = temporary
        self.manifest: dict[str, Any] = {}

    # -- set-up ---------------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls,
        path: Path,
        settings: Mapping[str, Any],
        *,
        resume: bool,
        overwrite: bool,
        temporary: bool = False,
    ) -> RunDir:
        """Open ``path`` for a new run or (``resume``) a run with the same result-defining ``settings``.

        A folder holding another run is refused unless ``resume`` (same configuration) or ``overwrite``
        (its parts are discarded).
        """
        rundir = cls(path, temporary)
        digest = config_hash(settings)
        manifest_path = rundir.path / MANIFEST
        existing = _read_json(manifest_path)
        if resume:
            if existing is None:
                raise InputError(
                    f"{rundir.path}: no run to resume here (no {MANIFEST}); check the path, or start a run "
                    "with --run-dir"
                )
            if existing.get("config_hash") != digest:
                before = existing.get("config", {})
                changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
                raise InputError(
                    f"{rundir.path}: was started with other options ({', '.join(changed) or 'format'} differ); "
                    "resume with the same options, or use a new --run-dir"
                )
            rundir.manifest = existing
        else:
            if existing is not None or (rundir.parts.is_dir() and any(rundir.parts.iterdir())):
                if not overwrite:
                    raise OutputExistsError(
                        f"{rundir.path}: holds an earlier run; pass --resume {rundir.path} to continue it, "
                        "or --overwrite to start again"
                    )
                shutil.rmtree(rundir.parts, ignore_errors=True)
                shutil.rmtree(rundir.path / MOSAICS, ignore_errors=True)
                manifest_path.unlink(missing_ok=True)
            rundir.manifest = {
                "format": FORMAT,
                "bldgseg_version": __version__,
                "config_hash": digest,
                "config": dict(settings),
                "created_utc": _now(),
                "sessions": [],
            }
        rundir.parts.mkdir(parents=True, exist_ok=True)
        rundir.clean_temporaries()
        return rundir

    def clean_temporaries(self) -> None:
        """Remove hidden half-written files left by a killed process."""
        for leftover in self.parts.glob(".*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    # -- state ----------------------------------------------------------------------------------

    def finished(self, uids: Iterable[str], need_probability: bool = False) -> set[str]:
        """The ``uids`` whose part is complete (with a probability core when ``need_probability``)."""
        names = {p.name for p in self.parts.iterdir()} if self.parts.is_dir() else set()
        done = set()
        for uid in uids:
            if f"{uid}.gpkg" in names and (not need_probability or f"{uid}.prob.tif" in names):
                done.add(uid)
        return done

    def start_session(
        self, inputs: list[dict[str, Any]], units: list[dict[str, Any]], done: int, executor: str
    ) -> None:
        """Record the inputs, the unit list and a new session (how many units were already done)."""
        self.manifest["inputs"] = inputs
        self.manifest["units"] = units
        self.manifest.setdefault("sessions", []).append(
            {
                "started_utc": _now(),
                "executor": executor,
                "units_total": len(units),
                "units_done_before": done,
                "units_submitted": len(units) - done,
            }
        )
        self.write_manifest()

    def end_session(self, completed: int, failed: int, output: str | list[str] | None = None) -> None:
        session = self.manifest["sessions"][-1]
        session.update(finished_utc=_now(), units_completed=completed, units_failed=failed)
        if output is not None:
            session["output"] = output
        self.write_manifest()

    def write_manifest(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.manifest, indent=1, default=str)
        _replace_atomically(self.path / MANIFEST, ".json", lambda tmp: tmp.write_text(text))

    def records(self, uids: Sequence[str]) -> tuple[dict[str, UnitRecord], dict[str, UnitRecord]]:
        """``(finished, failed)`` records of ``uids``, read from the parts' ``unit`` tables / error files."""
        finished: dict[str, UnitRecord] = {}
        failed: dict[str, UnitRecord] = {}
        for uid in uids:
            gpkg, _prob, error = part_paths(self.path, uid)
            if gpkg.exists():
                finished[uid] = read_record(gpkg)
            elif error.exists():
                data = json.loads(error.read_text())
                failed[uid] = UnitRecord(
                    uid=uid, raster=data.get("raster", ""), error=data.get("error") or "failed"
                )
        return finished, failed

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable run manifest ({exc}); use a new --run-dir") from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------------- merge


def merge_buildings(
    dest: Path,
    parts: Sequence[Path],
    crs: Any,
    empty: gpd.GeoDataFrame,
    tables: Mapping[str, pd.DataFrame],
    *,
    overwrite: bool,
    multi: bool = False,
    staging: Path | None = None,
    source_image: str | None = None,
) -> int:
    """Stream the ``buildings`` of ``parts`` (in order) into ``dest``, atomically, in the format its extension
    names (:mod:`bldgseg.vector_formats`).

    With ``source_image``, only the buildings whose ``source_image`` is that are written (one tile of a mosaic).

    Each part is reprojected to ``crs``; at most :data:`MERGE_BATCH_ROWS` rows are held at once. ``empty`` is
    the (column-ordered, empty) frame written when no part has a building; ``tables`` are attribute-only tables
    written after the layer (kept as metadata and sidecars by GeoParquet and FlatGeobuf); a GeoPackage gets
    the QGIS style as from :func:`bldgseg.export.write_gpkg`. GeoParquet and FlatGeobuf are converted from a
    temporary GeoPackage in the folder ``staging`` (default: next to ``dest``), removed afterwards. Returns
    the number of buildings written.
    """
    dest = Path(dest)
    check_frames({"buildings": empty}, tables)
    if output_format(dest) == "gpkg":
        refuse_existing(dest, overwrite, label=dest.name, file=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _merge_gpkg(
            dest, parts, crs, empty, tables, overwrite=overwrite, multi=multi, final=True, source_image=source_image
        )
    refuse_existing_outputs(dest, overwrite, label=dest.name)
    stage = Path(staging if staging is not None else dest.parent) / f".{dest.name}.merge.gpkg"
    stage.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = _merge_gpkg(
            stage, parts, crs, empty, {}, overwrite=True, multi=multi, final=False, source_image=source_image
        )
        convert_layer(stage, dest, tables, overwrite=overwrite)
    finally:
        stage.unlink(missing_ok=True)
    return written


def _merge_gpkg(
    dest: Path,
    parts: Sequence[Path],
    crs: Any,
    empty: gpd.GeoDataFrame,
    tables: Mapping[str, pd.DataFrame],
    *,
    overwrite: bool,
    multi: bool,
    final: bool,
    source_image: str | None = None,
) -> int:
    """The GeoPackage merge; a non-``final`` one (to be converted) gets no spatial index and no style."""
    with atomic_write(dest, ".gpkg", overwrite=overwrite, sidecars=GPKG_SIDECARS) as tmp:
        written = _stream_parts(tmp, parts, crs, list(empty.columns), multi, source_image, spatial_index=final)
        if not written:  # no building at all: an empty layer with every column
            geometry_type = "MultiPolygon" if multi else empty.attrs.get("geometry_type", "Polygon")
            pyogrio.write_dataframe(
                empty,
                tmp,
                driver="GPKG",
                layer="buildings",
                geometry_type=geometry_type,
                dataset_options={"VERSION": GPKG_VERSION},
            )
        for name, table in tables.items():
            pyogrio.write_dataframe(table, tmp, driver="GPKG", layer=name, append=False)
        if final:
            write_styles(tmp, {"buildings": default_building_style()})
    return written


def _stream_parts(
    gpkg: Path,
    parts: Sequence[Path],
    crs: Any,
    columns: list[str],
    multi: bool,
    source_image: str | None = None,
    spatial_index: bool = True,
) -> int:
    """Append the parts' buildings (reprojected to ``crs``, ``columns`` in order, a column a part lacks null)
    to layer ``buildings`` of ``gpkg`` in batches of about :data:`MERGE_BATCH_ROWS` rows; returns how many
    were written."""
    written = 0

    def flush(frames: list[gpd.GeoDataFrame]) -> None:
        nonlocal written
        batch = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=crs)
        kwargs: dict[str, Any] = {"driver": "GPKG", "layer": "buildings"}
        if written == 0:
            kwargs["dataset_options"] = {"VERSION": GPKG_VERSION}
            if not spatial_index:
                kwargs["layer_options"] = {"SPATIAL_INDEX": "NO"}
        else:
            kwargs["append"] = True
        if multi:
            kwargs.update(geometry_type="MultiPolygon", promote_to_multi=True)
        else:
            kwargs["geometry_type"] = "Polygon"
        pyogrio.write_dataframe(batch, gpkg, **kwargs)
        written += len(batch)

    pending: list[gpd.GeoDataFrame] = []
    rows = 0
    for part in parts:
        frame = pyogrio.read_dataframe(part, layer="buildings")
        if source_image is not None and len(frame):
            frame = frame[(frame["source_image"] == source_image).to_numpy()]
        if not len(frame):
            continue
        frame = frame.to_crs(crs)
        for name in [c for c in columns if c not in frame.columns]:  # image_date: parts of undated rasters lack it
            frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        pending.append(frame[columns])
        rows += len(frame)
        if rows >= MERGE_BATCH_ROWS:
            flush(pending)
            pending, rows = [], 0
    if pending:
        flush(pending)
    return written
