"""GeoParquet 1.1 files written batch by batch: WKB geometry, a ``bbox`` covering column, ``geo`` metadata.

pyarrow is an optional dependency (the ``bldgseg[parquet]`` extra): it is imported only when a file is
written, and :func:`require_pyarrow` turns its absence into a one-line error naming the extra.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from pyproj import CRS

from bldgseg import __version__
from bldgseg.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["GEOPARQUET_VERSION", "PARQUET_EXTRA", "GeoParquetWriter", "geo_metadata", "require_pyarrow"]

GEOPARQUET_VERSION = "1.1.0"
#: The extra that installs pyarrow.
PARQUET_EXTRA = "bldgseg[parquet]"
_BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def require_pyarrow(name: str, reading: bool = False) -> None:
    """Raise ``InputError`` (naming the ``[parquet]`` extra) when pyarrow cannot be imported."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        alternative = "" if reading else ", or write .gpkg or .fgb"
        raise InputError(
            f"{name}: GeoParquet {'input' if reading else 'output'} needs pyarrow; install it with "
            f"pip install '{PARQUET_EXTRA}'{alternative}"
        ) from None


def geo_metadata(crs: Any, geometry_types: Sequence[str], bbox: Sequence[float] | None) -> dict[str, Any]:
    """The file's ``geo`` metadata: one WKB ``geometry`` column with its CRS (PROJJSON) and bbox covering."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "crs": None if crs is None else CRS.from_user_input(crs).to_json_dict(),
        "geometry_types": sorted(set(geometry_types)),
        "covering": {"bbox": {name: ["bbox", name] for name in _BBOX_FIELDS}},
    }
    if bbox is not None and np.all(np.isfinite(bbox)):
        column["bbox"] = [float(v) for v in bbox]
    return {
        "version": GEOPARQUET_VERSION,
        "primary_column": "geometry",
        "columns": {"geometry": column},
        "creator": {"library": "bldgseg", "version": __version__},
    }


class GeoParquetWriter:
    """Write attribute tables plus WKB geometries to ``path`` as GeoParquet, one row group per :meth:`write`.

    ``attributes`` is the schema of the non-geometry columns; ``geo`` the :func:`geo_metadata` (known before
    the first row: a streamed file cannot rewrite its schema); ``metadata`` extra key-value metadata (text).
    """

    def __init__(
        self,
        path: Path,
        attributes: pa.Schema,
        geo: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._bbox_type = pa.struct([(name, pa.float64()) for name in _BBOX_FIELDS])
        fields = [*attributes.remove_metadata(), pa.field("geometry", pa.binary()), pa.field("bbox", self._bbox_type)]
        text = {"geo": json.dumps(geo), **dict(metadata or {})}
        self.schema = pa.schema(fields, metadata=text)
        self._writer = pq.ParquetWriter(path, self.schema)
        self.rows = 0

    def write(self, attributes: pa.Table | pa.RecordBatch, wkb: pa.Array | np.ndarray) -> None:
        """Append one row group: ``attributes`` (the declared columns) and their geometries as WKB."""
        pa = self._pa
        wkb = pa.array(wkb, type=pa.binary()) if isinstance(wkb, np.ndarray) else wkb.cast(pa.binary())
        bounds = shapely.bounds(shapely.from_wkb(np.asarray(wkb.to_numpy(zero_copy_only=False), dtype=object)))
        bbox = pa.StructArray.from_arrays(
            [pa.array(bounds[:, i], type=pa.float64()) for i in range(4)], fields=list(self._bbox_type)
        )
        columns = [attributes.column(i) for i in range(attributes.num_columns)]
        table = pa.Table.from_arrays([*columns, wkb, bbox], names=self.schema.names).cast(self.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
