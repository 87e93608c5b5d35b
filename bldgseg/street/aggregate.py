"""Per-building aggregation of facade observations (robust medians with counts) and the join onto buildings."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd

__all__ = ["OBSERVATION_COLUMNS", "STREET_COLUMNS", "aggregate_observations", "join_street"]

#: Columns of the ``facade_observations`` table, in order.
OBSERVATION_COLUMNS = [
    "building_id",
    "photo",
    "distance_m",
    "height_m",
    "width_m",
    "floors",
    "window_wall_ratio",
    "width_complete",
    "wall_length_m",
    "wall",
    "storey_height_m",
    "window_rows",
    "height_base",
    "height_columns",
    "columns",
    "bearing_deg",
    "incidence_deg",
    "facade_area_m2",
    "facade_mean_r",
    "facade_mean_g",
    "facade_mean_b",
    "facade_std_r",
    "facade_std_g",
    "facade_std_b",
    "facade_texture_contrast",
    "facade_texture_homogeneity",
    "facade_texture_energy",
    "facade_texture_correlation",
    "facade_texture_entropy",
]
#: Columns added to (or replaced in) the ``buildings`` layer.
STREET_COLUMNS = [
    "height_m",
    "height_source",
    "street_height_m",
    "floors",
    "facade_width_m",
    "facade_width_complete",
    "window_wall_ratio",
    "facade_mean_r",
    "facade_mean_g",
    "facade_mean_b",
    "street_observations",
]


def _median(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


def _facade_width(group: pd.DataFrame) -> tuple[float, bool]:
    """Width of the building's most-observed wall: median of complete views, else the widest partial view."""
    rows = group.dropna(subset=["width_m"])
    if rows.empty:
        return math.nan, False
    counts = rows.groupby("wall").size()
    lengths = rows.groupby("wall")["wall_length_m"].first()
    best = max(counts.index, key=lambda w: (counts[w], lengths[w]))
    on_wall = rows[rows["wall"] == best]
    complete = on_wall[on_wall["width_complete"].astype(bool)]
    if len(complete):
        return float(complete["width_m"].median()), True
    return float(on_wall["width_m"].max()), False


def aggregate_observations(observations: pd.DataFrame) -> pd.DataFrame:
    """One row per ``building_id``: medians over its observations and ``street_observations`` (the count).

    ``floors`` is the median rounded half up; ``facade_width_m`` is measured on the wall seen most often (see
    ``_facade_width``), ``facade_width_complete`` says whether any photo saw that wall end to end.
    """
    columns = [c for c in STREET_COLUMNS if c not in ("height_m", "height_source")]
    if observations.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="building_id"))
    rows = {}
    for building, group in observations.groupby("building_id", sort=True):
        floors = _median(group["floors"])
        width, complete = _facade_width(group)
        rows[building] = {
            "street_height_m": _median(group["height_m"]),
            "floors": math.floor(floors + 0.5) if math.isfinite(floors) else math.nan,
            "facade_width_m": width,
            "facade_width_complete": complete,
            "window_wall_ratio": _median(group["window_wall_ratio"]),
            "facade_mean_r": _median(group["facade_mean_r"]),
            "facade_mean_g": _median(group["facade_mean_g"]),
            "facade_mean_b": _median(group["facade_mean_b"]),
            "street_observations": len(group),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")[columns]
    out.index.name = "building_id"
    return out


def join_street(
    buildings: gpd.GeoDataFrame, aggregates: pd.DataFrame, replace_height: bool = False
) -> gpd.GeoDataFrame:
    """``buildings`` (with a ``building_id`` column) plus the street aggregates.

    ``height_m`` keeps a height the buildings already have (``height_source`` stays, or becomes ``input``)
    unless ``replace_height``; buildings without one, or whose height came from an earlier street run, get
    the street height (``height_source`` = ``street``).
    ``street_height_m`` always holds the street median. Buildings no photo measured get empty values and
    ``street_observations`` = 0.
    """
    out = buildings.copy()
    agg = aggregates.reindex(out["building_id"].to_numpy())
    street = pd.to_numeric(agg["street_height_m"], errors="coerce").to_numpy(dtype=float)
    if "height_m" in out.columns:
        existing = pd.to_numeric(out["height_m"], errors="coerce").to_numpy(dtype=float)
    else:
        existing = np.full(len(out), np.nan)
    if "height_source" in out.columns:
        given = [None if pd.isna(v) else str(v) for v in out["height_source"]]
    else:
        given = [None] * len(out)
    old_source = np.array(
        [
            s if s is not None else ("input" if np.isfinite(h) else None)
            for s, h in zip(given, existing, strict=True)
        ],
        dtype=object,
    )
    earlier_street = np.array([v == "street" for v in old_source], dtype=bool)  # from a previous street run
    use_street = np.isfinite(street) & (replace_height | ~np.isfinite(existing) | earlier_street)
    out["height_m"] = np.where(use_street, street, existing)
    source = np.where(use_street, "street", old_source)
    out["height_source"] = pd.Series(source, index=out.index, dtype="string")
    for column in STREET_COLUMNS[2:]:
        values = agg[column].to_numpy()
        if column == "street_observations":
            values = np.nan_to_num(values.astype(float), nan=0.0).astype(int)
        elif column == "facade_width_complete":
            values = pd.Series(values, index=out.index, dtype="boolean")
        elif column == "floors":
            values = pd.Series(values, index=out.index, dtype="Int64")
        else:
            values = values.astype(float)
        out[column] = values
    return out
