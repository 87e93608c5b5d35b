"""Building masks and instance label images to polygons: polygonize, filter by area, simplify (metric CRS)."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon

from bldgseg.errors import InputError
from bldgseg.geo_metric import METRIC_EPSG_COLUMN, from_metric, to_metric
from bldgseg.regularize import regularize_metric

__all__ = [
    "instance_outlines",
    "instances_to_polygons",
    "label_image_to_polygons",
    "mask_to_polygons",
    "metric_areas",
    "refine_outlines",
    "simplify_coverage",
]

_EIGHT = np.ones((3, 3), dtype=bool)

# -------------------- helpers


def _polygonal_parts(geom: Any) -> list[Polygon]:
    """Non-empty polygons of ``geom`` after ``make_valid`` (lines and points from collapses are dropped)."""
    if geom is None or geom.is_empty:
        return []
    if not geom.is_valid:
        geom = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    if isinstance(geom, Polygon):
        return [geom] if geom.area > 0 else []
    if isinstance(geom, MultiPolygon) or hasattr(geom, "geoms"):
        parts: list[Polygon] = []
        for g in geom.geoms:
            parts.extend(_polygonal_parts(g))
        return parts
    return []


def _valid_parts(geoms: list[Any], values: list[int]) -> tuple[list[Polygon], list[int]]:
    """:func:`_polygonal_parts` of every geometry with its value repeated per part; the validity of all of
    them is checked in one vectorized call (most outlines are valid polygons and pass through unchanged)."""
    array = np.asarray(geoms, dtype=object)
    valid = shapely.is_valid(array) & (shapely.get_type_id(array) == 3) & (shapely.area(array) > 0)
    parts: list[Polygon] = []
    part_values: list[int] = []
    for geom, value, ok in zip(geoms, values, valid, strict=True):
        found = [geom] if ok else _polygonal_parts(geom)
        parts.extend(found)
        part_values.extend([value] * len(found))
    return parts, part_values


def _label_means(values: np.ndarray, labels: np.ndarray, count: int, where: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over each label 1..``count`` (as ``scipy.ndimage.mean``, with one bincount) of the
    pixels ``where`` (which must hold every labelled pixel; the sums are those over the whole array)."""
    flat = labels[where]
    sums = np.bincount(flat, weights=values[where].astype(np.float64), minlength=count + 1)[1:]
    pixels = np.bincount(flat, minlength=count + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / pixels


def _empty(crs: Any, extra: dict[str, Any] | None = None) -> gpd.GeoDataFrame:
    cols: dict[str, Any] = dict(extra or {})
    cols["confidence"] = np.array([], dtype=np.float64)
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def _check_arrays(arr: np.ndarray, prob: np.ndarray | None, what: str) -> np.ndarray | None:
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array, got shape {arr.shape}; pass a single band")
    if prob is None:
        return None
    p = np.asarray(prob)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.shape != arr.shape:
        raise InputError(f"prob: shape {p.shape} differs from the {what}'s {arr.shape}; pass matching arrays")
    return p


def _grid_shapes(
    labels: np.ndarray, mask: np.ndarray, transform: Affine, pixel_origin: tuple[int, int] | None
) -> list[tuple[Any, int]]:
    """``(geometry, value)`` of ``rasterio.features.shapes`` (8-connectivity) for ``labels`` under ``mask``.

    With ``pixel_origin`` = (row, col), ``labels`` is the window of a raster starting at that pixel and
    ``transform`` is the *raster's*: vertices are taken in the raster's pixel coordinates (exact integers),
    then mapped with ``transform``, so the same pixels give bit-identical vertices from any window. The
    polygons are built in one vectorized call (the same coordinates as ``shapely.geometry.shape`` of each).
    """
    to_map = None
    if pixel_origin is not None:
        row, col = pixel_origin
        a, b, c, d, e, f = transform[:6]
        transform = Affine.translation(col, row)

        def to_map(xy: np.ndarray) -> np.ndarray:
            return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])

    found = list(shapes(labels, mask=mask, connectivity=8, transform=transform))
    if not found:
        return []
    rings = [np.asarray(ring, dtype=np.float64) for g, _ in found for ring in g["coordinates"]]
    coords = np.concatenate(rings)
    if to_map is not None:
        coords = to_map(coords)
    ring_of = np.repeat(np.arange(len(rings)), [len(r) for r in rings])
    polygon_of = np.repeat(np.arange(len(found)), [len(g["coordinates"]) for g, _ in found])
    polygons = shapely.polygons(shapely.linearrings(coords, indices=ring_of), indices=polygon_of)
    return [(geom, int(v)) for geom, (_, v) in zip(polygons, found, strict=True)]


# -------------------- public


def mask_to_polygons(
    mask: np.ndarray,
    transform: Affine,
    crs: Any,
    prob: np.ndarray | None = None,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    regularize: bool = False,
    pixel_origin: tuple[int, int] | None = None,
) -> gpd.GeoDataFrame:
    """Polygons of the foreground of a boolean mask, in ``crs``, with their mean probability.

    Foreground pixels are grouped with 8-connectivity; holes are kept. A component whose outline is not a
    valid polygon (e.g. pixels touching only at a corner) is repaired with ``make_valid`` and split into its
    polygonal parts, so every row holds a ``Polygon``; the parts of one component share its ``confidence``
    (mean of ``prob`` over the component's pixels, 1.0 without ``prob``). ``min_area_m2`` drops parts smaller
    than that on the ground; ``simplify_m`` (Douglas-Peucker, topology preserving) and ``regularize`` (see
    :func:`bldgseg.regularize.regularize_polygon`, with the pixel size, or ``simplify_m`` if larger, as the
    outline-noise scale) work in the UTM zone of each polygon and the result comes back in ``crs``. Those
    three need a ``crs``. Rows
    have a fresh RangeIndex; an empty mask gives an empty GeoDataFrame with the same columns.
    ``pixel_origin`` = (row, col): ``mask`` is a window of a raster from that pixel and ``transform`` the
    raster's (vertices bit-identical from any window of it; see :func:`_grid_shapes`).
    """
    mask = np.asarray(mask).astype(bool)
    p = _check_arrays(mask, prob, "mask")
    needs_metric = min_area_m2 > 0 or simplify_m > 0 or regularize
    if needs_metric and crs is None:
        raise InputError("mask: min_area_m2, simplify_m and regularize need a CRS; pass the raster's crs")
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return _empty(crs)
    conf = _label_means(p, labels, n, mask) if p is not None else np.ones(n)

    # components never touch (not even at a corner), so polygonizing the labels gives the same outlines as
    # polygonizing the mask, with each outline's component id attached
    outlines = list(_grid_shapes(labels.astype(np.int32), mask, transform, pixel_origin))
    geoms, comp = _valid_parts([g for g, _ in outlines], [int(v) for _, v in outlines])
    if not geoms:
        return _empty(crs)
    gdf = gpd.GeoDataFrame(
        {"confidence": conf[np.asarray(comp) - 1]}, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs
    )
    if not needs_metric:
        return gdf

    metric = to_metric(gdf)
    keep = _areas(metric) >= min_area_m2 if min_area_m2 > 0 else np.ones(len(gdf), dtype=bool)
    return _refine(gdf[keep], metric[keep], transform, simplify_m, regularize)


def metric_areas(gdf: gpd.GeoDataFrame) -> np.ndarray:
    """Area of each row in m², measured in the UTM zone of its own centroid."""
    return _areas(to_metric(gdf))


def _areas(metric: gpd.GeoDataFrame) -> np.ndarray:
    return shapely.area(np.asarray(metric.geometry.values, dtype=object))


def refine_outlines(
    gdf: gpd.GeoDataFrame, transform: Affine, simplify_m: float = 0.0, regularize: bool = False
) -> gpd.GeoDataFrame:
    """Each polygon simplified by ``simplify_m`` (Douglas-Peucker, topology preserving) or regularized, in its
    UTM zone, as :func:`mask_to_polygons` does; ``transform`` gives the pixel size (regularization's noise
    scale). Rows keep their ``confidence``; a fresh RangeIndex."""
    if gdf.empty or (simplify_m <= 0 and not regularize):
        return gdf.reset_index(drop=True)
    return _refine(gdf, to_metric(gdf), transform, simplify_m, regularize)


def _refine(
    gdf: gpd.GeoDataFrame,
    metric: gpd.GeoDataFrame,
    transform: Affine,
    simplify_m: float,
    regularize: bool,
) -> gpd.GeoDataFrame:
    """:func:`refine_outlines` with the metric copy of ``gdf`` (from ``to_metric``) given."""
    crs = gdf.crs
    if len(gdf) == 0:
        return _empty(crs)
    if simplify_m <= 0 and not regularize:
        return gdf.reset_index(drop=True)
    mgeoms = np.asarray(metric.geometry.values, dtype=object)
    if regularize:
        mgeoms = regularize_metric(gdf, mgeoms, transform, simplify_m)
    else:
        mgeoms = shapely.simplify(mgeoms, simplify_m, preserve_topology=True)

    back = from_metric(mgeoms, metric[METRIC_EPSG_COLUMN].to_numpy(), crs)
    out_geoms: list[Polygon] = []
    out_conf: list[float] = []
    for g, c in zip(back.values, gdf["confidence"].to_numpy(), strict=True):
        parts = _polygonal_parts(g)
        if len(parts) > 1:  # keep the main part: the other pieces are slivers from the round trip
            parts = [max(parts, key=lambda q: q.area)]
        out_geoms.extend(parts)
        out_conf.extend([float(c)] * len(parts))
    if not out_geoms:
        return _empty(crs)
    return gpd.GeoDataFrame({"confidence": out_conf}, geometry=gpd.GeoSeries(out_geoms, crs=crs), crs=crs)


def label_image_to_polygons(
    labels: np.ndarray,
    transform: Affine,
    crs: Any,
    prob: np.ndarray | None = None,
    pixel_origin: tuple[int, int] | None = None,
) -> gpd.GeoDataFrame:
    """One (Multi)Polygon per positive label value, columns ``label``, ``geometry``, ``confidence``.

    Pieces of one label are dissolved; neighbouring labels share their edges exactly (same pixel grid).
    ``confidence`` is the mean of ``prob`` over the label's pixels (1.0 without ``prob``). Rows are sorted by
    label; zero and negative values are background. ``pixel_origin``: as in :func:`mask_to_polygons`.
    """
    labels = np.asarray(labels)
    p = _check_arrays(labels, prob, "label image")
    if labels.size and labels.max() > np.iinfo(np.int32).max:
        raise InputError("label image: label values exceed the int32 range; relabel with consecutive ids")
    fg = labels > 0
    if not fg.any():
        return _empty(crs, {"label": np.array([], dtype=np.int64)})
    lab32 = np.where(fg, labels, 0).astype(np.int32)
    pieces: dict[int, list[Any]] = {}
    for g, value in _grid_shapes(lab32, fg, transform, pixel_origin):
        pieces.setdefault(value, []).append(g)
    ids = np.array(sorted(pieces), dtype=np.int64)
    geoms = []
    for i in ids:
        parts = _polygonal_parts(shapely.union_all(pieces[int(i)]))
        geoms.append(parts[0] if len(parts) == 1 else MultiPolygon(parts) if parts else Polygon())
    conf = _label_means(p, lab32, int(ids[-1]), fg)[ids - 1] if p is not None else np.ones(len(ids))
    return gpd.GeoDataFrame(
        {"label": ids, "confidence": conf}, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs
    )


def instances_to_polygons(
    labels: np.ndarray,
    transform: Affine,
    crs: Any,
    prob: np.ndarray | None = None,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    regularize: bool = False,
    crs_units_per_m: float = 1.0,
    pixel_origin: tuple[int, int] | None = None,
) -> gpd.GeoDataFrame:
    """One polygon per building of an instance label image, touching buildings sharing their edges exactly.

    Like :func:`mask_to_polygons` (``confidence``, ``min_area_m2`` measured in the local UTM zone) but
    simplification is ``shapely.coverage_simplify`` over all buildings at once, so a shared edge is simplified
    once and stays shared: no gaps or overlaps between neighbours. ``simplify_m`` is converted to CRS units
    with ``crs_units_per_m`` (e.g. the pixel size in CRS units over the ground sample distance in metres).
    ``regularize`` works per building as in :func:`mask_to_polygons`, so touching neighbours can then gain
    hairline gaps or overlaps. Rows: ``confidence`` and a ``Polygon`` (pieces of one building that touch only
    at a corner become rows of their own, as in :func:`mask_to_polygons`). ``pixel_origin``: as there.
    """
    gdf = instance_outlines(labels, transform, crs, prob, pixel_origin)
    if gdf.empty or not (min_area_m2 > 0 or simplify_m > 0 or regularize):
        return gdf
    if crs is None:
        raise InputError("labels: min_area_m2, simplify_m and regularize need a CRS; pass the raster's crs")
    metric = to_metric(gdf)
    if min_area_m2 > 0:
        keep = _areas(metric) >= min_area_m2
        gdf, metric = gdf[keep].reset_index(drop=True), metric[keep].reset_index(drop=True)
        if gdf.empty:
            return gdf
    if regularize:
        mgeoms = regularize_metric(
            gdf, np.asarray(metric.geometry.values, dtype=object), transform, simplify_m
        )
        back = from_metric(mgeoms, metric[METRIC_EPSG_COLUMN].to_numpy(), crs)
        return gpd.GeoDataFrame({"confidence": gdf["confidence"].to_numpy()}, geometry=back.values, crs=crs)
    return simplify_coverage(gdf, simplify_m * crs_units_per_m)


def instance_outlines(
    labels: np.ndarray,
    transform: Affine,
    crs: Any,
    prob: np.ndarray | None = None,
    pixel_origin: tuple[int, int] | None = None,
) -> gpd.GeoDataFrame:
    """One row per polygon of each building of an instance label image (columns ``confidence``, ``geometry``):
    :func:`label_image_to_polygons` with pieces that touch only at a corner as rows of their own."""
    gdf = label_image_to_polygons(labels, transform, crs, prob, pixel_origin).drop(columns="label")
    return gdf.explode(index_parts=False, ignore_index=True)


def simplify_coverage(gdf: gpd.GeoDataFrame, tolerance: float) -> gpd.GeoDataFrame:
    """Buildings that share edges simplified together (``shapely.coverage_simplify``, ``tolerance`` in CRS
    units): each shared edge is simplified once and stays shared. Rows keep their ``confidence``."""
    if gdf.empty or tolerance <= 0:
        return gdf.reset_index(drop=True)
    simplified = shapely.coverage_simplify(
        np.asarray(gdf.geometry.values, dtype=object), tolerance, simplify_boundary=True
    )
    return gpd.GeoDataFrame(
        {"confidence": gdf["confidence"].to_numpy()}, geometry=list(simplified), crs=gdf.crs
    )
