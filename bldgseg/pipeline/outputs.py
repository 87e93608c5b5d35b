"""What a run produces: building columns, the runs and errors tables, merged outputs, probability maps."""

from __future__ import annotations

import importlib.metadata
import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio

from bldgseg import __version__
from bldgseg.attributes import IMAGE_COLUMNS, SHAPE_COLUMNS
from bldgseg.export import errors_table
from bldgseg.files import refuse_existing_any
from bldgseg.io import RasterInfo, SkippedInput
from bldgseg.models import ModelCard
from bldgseg.pipeline.config import RunConfig, UnitSettings
from bldgseg.pipeline.plan import WorkUnit, units_by_raster
from bldgseg.probmaps import ProbabilityMapWriter
from bldgseg.runstate import RunDir, UnitRecord, merge_buildings, part_paths
from bldgseg.vector_formats import (
    OUTPUT_FORMATS,
    check_format,
    check_vector_output,
    output_files,
    read_buildings,
)

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

#: Column added after ``source_image`` when an input has a known acquisition date (STAC Items): ISO 8601 UTC,
#: ``start/end`` for a date range, empty (null) for buildings of undated inputs.
IMAGE_DATE = "image_date"

#: Columns of the ``errors`` table (files left out, units that failed).


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
            frames = [read_buildings(p) for p in outputs]
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


def order_columns(gdf: gpd.GeoDataFrame, dated: bool | None = None) -> gpd.GeoDataFrame:
    """The documented column order; missing measurement columns are added empty. ``image_date`` is kept when
    ``dated`` (added empty where missing), or with ``dated=None`` when the frame has it."""
    for name in BUILDING_COLUMNS:
        if name not in gdf.columns:
            gdf[name] = "" if name in ("source_image", "model") else np.nan
    if dated is None:
        dated = IMAGE_DATE in gdf.columns
    if not dated:
        return gdf[BUILDING_COLUMNS + ["geometry"]]
    if IMAGE_DATE not in gdf.columns:
        gdf[IMAGE_DATE] = pd.Series([None] * len(gdf), index=gdf.index, dtype=object)
    at = BUILDING_COLUMNS.index("source_image") + 1
    return gdf[[*BUILDING_COLUMNS[:at], IMAGE_DATE, *BUILDING_COLUMNS[at:], "geometry"]]


def merge_frames(parts: list[gpd.GeoDataFrame], crs: Any) -> gpd.GeoDataFrame:
    """Concatenate building frames, reprojecting each to ``crs``."""
    frames = [p.to_crs(crs) for p in parts if len(p)]
    if not frames:
        return empty_buildings(crs)
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=crs)


def empty_buildings(crs: Any, dated: bool = False) -> gpd.GeoDataFrame:
    """An empty ``buildings`` frame with every column (``image_date`` too when ``dated``)."""
    return order_columns(
        gpd.GeoDataFrame({"geometry": gpd.GeoSeries([], crs=crs)}, geometry="geometry", crs=crs), dated
    )


def unique_stems(paths: list[Path]) -> dict[Path, str]:
    """A file stem per input, prefixed with its folder's name where stems repeat."""
    names = Counter(p.stem for p in paths)
    return {p: p.stem if names[p.stem] == 1 else f"{p.parent.name}_{p.stem}" for p in paths}


def per_image_format(config: RunConfig) -> str:
    """The format of ``per_image`` outputs: ``config.output_format``, GeoPackage by default."""
    return config.output_format or "gpkg"


def per_image_targets(config: RunConfig, paths: list[Path]) -> dict[Path, Path]:
    """Output file of each input with ``per_image`` (``<stem>.gpkg``, ``.parquet`` or ``.fgb``)."""
    suffix = OUTPUT_FORMATS.get(per_image_format(config), ".gpkg")
    return {p: Path(config.output) / f"{stem}{suffix}" for p, stem in unique_stems(paths).items()}


def probability_targets(folder: Path, rasters: list[Path]) -> dict[Path, Path]:
    """The probability COG of each raster processed (a file, or a mosaic's VRT: named after the mosaic)."""
    stems = unique_stems(rasters)
    return {path: Path(folder) / f"{stems[path]}.probability.tif" for path in rasters}


def check_output(config: RunConfig, infos: list[RasterInfo]) -> None:
    """Refuse an unknown output format or an existing output (sidecars included) before any work is done."""
    if config.per_image:
        check_format(per_image_format(config), config.output)
        targets = per_image_targets(config, [i.path for i in infos]).values()
        refuse_existing_any([f for t in targets for f in output_files(t)], config.overwrite, count=True)
        return
    check_vector_output(config.output, config.overwrite, config.output_format)


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
    devices = sorted({r.device for r in records if r.device})

    def recorded(name: str, default: str = "") -> str:
        return "; ".join(sorted({getattr(r, name) for r in records if getattr(r, name)})) or default

    return {
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bldgseg_version": __version__,
        "torch_version": _torch_version(),
        "device": ",".join(devices) or config.device,
        "precision": recorded("precision", config.precision),
        "engine": recorded("engine", config.engine),
        "inference_reason": recorded("inference_reason"),
        "model": card.name,
        "model_card": json.dumps(card.to_dict()),
        "parameters": json.dumps(_run_parameters(config, settings), default=str),
        "inputs": json.dumps([_input_summary(i) for i in infos]),
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


def _run_parameters(config: RunConfig, settings: UnitSettings) -> dict[str, Any]:
    """Every option of the run (paths as text), with the threshold, instance grouping and post-processing
    actually used."""
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "inputs"}
    params.update(threshold=settings.threshold, instances=settings.instances, output=str(config.output))
    post = settings.postprocess()
    params.update(
        min_area_m2=post.min_area_m2,
        hole_area_m2=post.hole_area_m2,
        opening_m=post.opening_m,
        merge_fragments=post.merge_fragments,
        split_core=post.split_core,
        regularize=post.regularize,
    )
    return params


def _input_summary(info: RasterInfo) -> dict[str, Any]:
    """One input raster as the ``runs`` table lists it (with its STAC Item id and date when known)."""
    summary = {
        "path": str(info.path),
        "crs": info.crs.to_string(),
        "gsd_m": round(info.gsd_m, 4),
        "width": info.width,
        "height": info.height,
        "bands": list(info.bands),
        "stretch_8bit": info.stretch,
    }
    if info.stac_item is not None:
        summary.update(stac_item=info.stac_item, image_date=info.image_date)
    return summary


def errors_frame(errors: list[RunError]) -> pd.DataFrame:
    """The ``errors`` table: one row per file left out or unit failed, with the one-line reason."""
    return errors_table((e.path, e.reason, e.stage, e.unit) for e in errors)


def write_outputs(
    config: RunConfig,
    units: list[WorkUnit],
    rundir: RunDir,
    finished: dict[str, UnitRecord],
    crs: Any,
    metadata: dict[str, Any],
    errors: list[RunError],
    infos: list[RasterInfo] | None = None,
) -> Path | list[Path]:
    """Merge the parts into one output file, or one per input image (``infos``) into the ``output`` folder.

    Per image, a tile of a mosaic gets the buildings whose ``source_image`` it is. GeoParquet and FlatGeobuf
    outputs are converted from a GeoPackage merged in the run directory."""
    tables = {"runs": pd.DataFrame([metadata]), "errors": errors_frame(errors)}
    dated = any(u.info.image_date is not None for u in units)
    empty = empty_buildings(crs, dated)

    def merge(target: Path, selected: list[WorkUnit], source_image: str | None = None) -> None:
        chosen = [u for u in selected if u.uid in finished]
        multi = any(finished[u.uid].multi for u in chosen)
        parts = [part_paths(rundir.path, u.uid)[0] for u in chosen]
        merge_buildings(
            target,
            parts,
            crs,
            empty,
            tables,
            overwrite=config.overwrite,
            multi=multi,
            staging=rundir.parts,
            source_image=source_image,
        )

    if not config.per_image:
        merge(config.output, units)
        return config.output
    Path(config.output).mkdir(parents=True, exist_ok=True)
    by_image = units_by_image(units)
    images = [i.path for i in infos] if infos is not None else list(by_image)
    targets = per_image_targets(config, images)
    for path in images:
        selected, in_mosaic = by_image.get(path, ([], False))
        merge(targets[path], selected, str(path) if in_mosaic else None)
    return [targets[path] for path in images]


def units_by_image(units: list[WorkUnit]) -> dict[Path, tuple[list[WorkUnit], bool]]:
    """The units that may hold each input image's buildings, and whether the image is a tile of a mosaic."""
    by_image: dict[Path, tuple[list[WorkUnit], bool]] = {}
    for unit in units:
        for path, in_mosaic in [(t.path, True) for t in unit.tiles] or [(unit.info.path, False)]:
            by_image.setdefault(path, ([], in_mosaic))[0].append(unit)
    return by_image


def write_probability_maps(
    infos: list[RasterInfo],
    units: list[WorkUnit],
    rundir: RunDir,
    folder: Path,
    finished: dict[str, UnitRecord],
) -> list[Path]:
    """One probability COG per raster (file or mosaic) in ``folder``, assembled chunk by chunk from the parts."""
    targets = probability_targets(folder, [info.path for info in infos])
    by_raster = units_by_raster(units)
    written = []
    for info in infos:
        writer = ProbabilityMapWriter(info, targets[info.path])
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


def _torch_version() -> str:
    """The installed torch's version, read from its metadata (a run on OpenVINO never imports torch)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return ""
