"""Output formats chosen by extension (.gpkg, .parquet, .fgb) and the writers of the non-GeoPackage ones.

A GeoPackage holds the ``buildings`` layer and the ``runs``/``errors`` tables itself (see :mod:`bldgseg.export`).
The other formats hold one layer, so the tables go elsewhere and are never lost:

- GeoParquet (``x.parquet``, 1.1 with a ``bbox`` covering column): every table as JSON under the file's
  ``bldgseg`` key-value metadata key, and the ``errors`` table as a sidecar ``x.errors.csv``;
- FlatGeobuf (``x.fgb``, rows in the spatial index's order): the tables as a sidecar ``x.run.json``, and
  also in the layer's ``bldgseg`` metadata item (GDAL >= 3.9 writes it into the header).

Files are written through :func:`bldgseg.files.atomic_write` (sidecars first, the main file last): an
interrupted write leaves no partial file. Layers are converted in Arrow batches of :data:`BATCH_ROWS` rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from bldgseg.errors import InputError
from bldgseg.files import OVERWRITE_HINT, atomic_replace, atomic_write, refuse_existing, refuse_existing_any
from bldgseg.geoparquet import GeoParquetWriter, geo_metadata, require_pyarrow

__all__ = [
    "BATCH_ROWS",
    "METADATA_KEY",
    "OUTPUT_FORMATS",
    "check_format",
    "check_vector_output",
    "convert_layer",
    "output_files",
    "output_format",
    "read_buildings",
    "refuse_existing_outputs",
    "run_document",
    "sidecar_paths",
    "write_frame",
]

#: Output format names (``--format``) and their file extensions.
OUTPUT_FORMATS = {"gpkg": ".gpkg", "parquet": ".parquet", "fgb": ".fgb"}
#: Rows per Arrow batch (and GeoParquet row group) when converting a layer.
BATCH_ROWS = 20_000
#: The key-value metadata key (GeoParquet) / layer metadata item (FlatGeobuf) holding the run tables as JSON.
METADATA_KEY = "bldgseg"
_EXTENSIONS = {suffix: name for name, suffix in OUTPUT_FORMATS.items()}
_CHOICES = ".gpkg (GeoPackage), .parquet (GeoParquet) or .fgb (FlatGeobuf)"


def output_format(path: str | os.PathLike[str]) -> str:
    """``"gpkg"``, ``"parquet"`` or ``"fgb"`` from ``path``'s extension; ``InputError`` for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise InputError(f"{path}: unknown output format {suffix or '(no extension)'}; end -o with {_CHOICES}")
    return _EXTENSIONS[suffix]


def check_format(name: str, label: str | os.PathLike[str]) -> str:
    """``name`` when it is an output format that can be written here (GeoParquet needs pyarrow)."""
    if name not in OUTPUT_FORMATS:
        raise InputError(f"--format {name}: unknown output format; use {', '.join(OUTPUT_FORMATS)}")
    if name == "parquet":
        require_pyarrow(Path(label).name)
    return name


def check_vector_output(
    path: str | os.PathLike[str], overwrite: bool, expected: str | None = None, *, label: str | None = None
) -> str:
    """Check an output file before any work: a known, writable format (matching ``expected``, the
    ``--format`` given, if any) and no existing file or sidecar unless ``overwrite``. Returns the format."""
    fmt = output_format(path)
    if expected is not None and check_format(expected, path) != fmt:
        raise InputError(
            f"{path}: --format {expected} does not match the extension {Path(path).suffix}; "
            f"drop --format or end -o with {OUTPUT_FORMATS[expected]}"
        )
    check_format(fmt, path)
    refuse_existing_outputs(path, overwrite, label=label)
    return fmt


def sidecar_paths(path: str | os.PathLike[str]) -> list[Path]:
    """The files written next to ``path`` to keep the run tables: ``x.errors.csv`` or ``x.run.json``."""
    path = Path(path)
    sidecar = {"parquet": ".errors.csv", "fgb": ".run.json"}.get(output_format(path))
    return [path.with_name(path.stem + sidecar)] if sidecar else []


def output_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and its sidecars."""
    return [Path(path), *sidecar_paths(path)]


def refuse_existing_outputs(path: str | os.PathLike[str], overwrite: bool, *, label: str | None = None) -> None:
    """``OutputExistsError`` when ``path`` (or a folder there) or one of its sidecars exists and not ``overwrite``."""
    refuse_existing(path, overwrite, label=label, file=True)
    refuse_existing_any(sidecar_paths(path), overwrite, OVERWRITE_HINT)


def run_document(tables: Mapping[str, pd.DataFrame]) -> dict[str, list[dict[str, Any]]]:
    """The tables as JSON-ready records (NaN as null): ``{"runs": [...], "errors": [...]}``."""
    return {name: json.loads(table.to_json(orient="records", date_format="iso")) for name, table in tables.items()}


def convert_layer(
    src: Path,
    dest: Path,
    tables: Mapping[str, pd.DataFrame],
    *,
    layer: str = "buildings",
    overwrite: bool = False,
) -> Path:
    """Stream ``layer`` of the GeoPackage ``src`` into ``dest`` (GeoParquet or FlatGeobuf) with ``tables`` kept
    as the format keeps them (module docstring); at most :data:`BATCH_ROWS` rows are held at once."""
    fmt = _non_gpkg_format(dest)
    document = json.dumps(run_document(tables))

    def build(tmp: Path) -> None:
        if fmt == "parquet":
            _gpkg_layer_to_parquet(src, layer, tmp, document)
        else:
            with pyogrio.open_arrow(src, layer=layer, batch_size=BATCH_ROWS) as (meta, reader):
                pyogrio.write_arrow(
                    reader,
                    tmp,
                    driver="FlatGeobuf",
                    layer="buildings",
                    geometry_name=meta["geometry_name"] or "wkb_geometry",
                    geometry_type=meta["geometry_type"],
                    crs=meta["crs"],
                    layer_metadata={METADATA_KEY: document},
                )

    return _write_with_sidecars(dest, fmt, tables, build, overwrite)


def write_frame(
    dest: Path, frame: gpd.GeoDataFrame, tables: Mapping[str, pd.DataFrame], *, overwrite: bool = False
) -> Path:
    """Write an in-memory ``frame`` to ``dest`` (GeoParquet or FlatGeobuf), ``tables`` kept as in
    :func:`convert_layer`. An empty frame is declared ``frame.attrs["geometry_type"]`` (default Polygon)."""
    fmt = _non_gpkg_format(dest)
    document = json.dumps(run_document(tables))

    def build(tmp: Path) -> None:
        if fmt == "parquet":
            _frame_to_parquet(frame, tmp, document)
            return
        kwargs: dict[str, Any] = {}
        if not frame.geometry.notna().any():
            kwargs["geometry_type"] = frame.attrs.get("geometry_type", "Polygon")
        metadata = {METADATA_KEY: document}
        pyogrio.write_dataframe(frame, tmp, driver="FlatGeobuf", layer="buildings", layer_metadata=metadata, **kwargs)

    return _write_with_sidecars(dest, fmt, tables, build, overwrite)


def read_buildings(path: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    """The ``buildings`` of an output in any of the formats."""
    fmt = output_format(path)
    if fmt == "parquet":
        require_pyarrow(Path(path).name)
        return gpd.read_parquet(path)
    return pyogrio.read_dataframe(path, layer="buildings" if fmt == "gpkg" else None)


# ------------------------------------------------------------------------------------------- helpers


def _non_gpkg_format(dest: Path) -> str:
    fmt = output_format(dest)
    if fmt == "gpkg":
        raise ValueError(f"{dest.name}: GeoPackages are written by bldgseg.export, not converted")
    if fmt == "parquet":
        require_pyarrow(Path(dest).name)
    return fmt


def _write_with_sidecars(dest: Path, fmt: str, tables: Mapping[str, pd.DataFrame], build, overwrite: bool) -> Path:
    """``build(tmp)`` the main file, write the sidecars, then move the main file into place (all atomic)."""
    dest = Path(dest)
    refuse_existing_outputs(dest, overwrite, label=dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest, dest.suffix, overwrite=overwrite) as tmp:
        build(tmp)
        for sidecar in sidecar_paths(dest):
            atomic_replace(sidecar, lambda t: _write_sidecar(t, fmt, tables), sidecar.suffix, overwrite=overwrite)
    return dest


def _write_sidecar(path: Path, fmt: str, tables: Mapping[str, pd.DataFrame]) -> None:
    if fmt == "parquet":
        errors = tables.get("errors", pd.DataFrame(columns=["path", "reason", "stage", "unit"]))
        errors.to_csv(path, index=False)
    else:
        path.write_text(json.dumps(run_document(tables), indent=1), encoding="utf-8")


def _gpkg_layer_to_parquet(src: Path, layer: str, tmp: Path, document: str) -> None:
    """GeoParquet from a GeoPackage layer, batch by batch (bbox and geometry type from the layer's info)."""
    info = pyogrio.read_info(src, layer=layer, force_total_bounds=True)
    declared = info["geometry_type"]
    types = [declared] if declared and declared != "Unknown" else []
    geo = geo_metadata(info["crs"], types, info["total_bounds"] if info["features"] else None)
    with pyogrio.open_arrow(src, layer=layer, batch_size=BATCH_ROWS, use_pyarrow=True) as (meta, reader):
        geometry = meta["geometry_name"] or "wkb_geometry"
        schema = reader.schema.remove(reader.schema.get_field_index(geometry))
        writer = GeoParquetWriter(tmp, schema, geo, {METADATA_KEY: document})
        try:
            for batch in reader:
                writer.write(batch.select(schema.names), batch.column(geometry))
        finally:
            writer.close()


def _frame_to_parquet(frame: gpd.GeoDataFrame, tmp: Path, document: str) -> None:
    """GeoParquet from an in-memory frame, in row groups of :data:`BATCH_ROWS` rows."""
    import pyarrow as pa

    geometry = frame.geometry
    attributes = pd.DataFrame(frame.drop(columns=geometry.name))
    types = [str(t) for t in geometry.geom_type.dropna().unique()]
    geo = geo_metadata(frame.crs, types, geometry.total_bounds if len(frame) else None)
    schema = pa.Schema.from_pandas(attributes, preserve_index=False)
    writer = GeoParquetWriter(tmp, schema, geo, {METADATA_KEY: document})
    try:
        for chunk in _row_slices(len(frame)):
            table = pa.Table.from_pandas(attributes.iloc[chunk], schema=schema, preserve_index=False)
            writer.write(table, np.asarray(shapely.to_wkb(geometry.values[chunk]), dtype=object))
    finally:
        writer.close()


def _row_slices(rows: int) -> Iterable[slice]:
    return (slice(start, start + BATCH_ROWS) for start in range(0, rows, BATCH_ROWS))
