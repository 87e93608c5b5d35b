"""Regularized outlines of touching buildings as an exact coverage: right angles, identical shared walls.

Buildings that touch (directly or through others) form a group. Each is squared off by
:func:`bldgseg.regularize.regularize_outline`, preferring the group's direction; walls of the group that run
within the noise scale of each other are then snapped onto one common line (a neighbour's wall and the
building's own become the same line; a row of houses gets one street facade). Each building is finally grown
by the noise scale into what no neighbour covers, clipped to the closing of the group (so the strips between
neighbours are inside it and outer walls stay each building's own), and overlaps and narrow gaps are resolved
by ``shapely.coverage_clean``: no gap, no overlap, identical vertices along shared walls.

Everything works in one isotropic plane (e.g. the raster's pixel frame of :mod:`bldgseg.postprocess`), so the
same group gives the same result wherever it is computed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import box

from bldgseg.regularize import outline_angle, regularize_outline

__all__ = ["regularize_coverage", "snap_to_common_lines", "touching_groups"]

#: Vertices whose triangle with their neighbours is smaller than (this x noise scale)² are dropped at the end.
_COLLINEAR = 1.0
#: An edge is axis-parallel in the rotated plane when its other coordinate changes by less than this share.
_AXIS_SLOPE = 1e-6


def touching_groups(geoms: np.ndarray) -> np.ndarray:
    """A group label per polygon: polygons that touch or overlap (directly or through others) share one."""
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(len(geoms), len(geoms)))
    return connected_components(graph, directed=False)[1]


def _main_part(geom: Any) -> Any:
    """The largest polygon of ``geom`` (None when it has none)."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and p.area > 0]
    return max(parts, key=lambda p: p.area) if parts else None


def _rotation(angle_deg: float, origin: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    a = math.radians(angle_deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]), np.asarray(origin)


def _axis_edges(polygon: Any) -> tuple[list[tuple[float, float]], list[tuple[float, float]]] | None:
    """(x, length) of the vertical and (y, length) of the horizontal edges of every ring; None when an edge is
    neither."""
    vertical: list[tuple[float, float]] = []
    horizontal: list[tuple[float, float]] = []
    for ring in [polygon.exterior, *polygon.interiors]:
        c = np.asarray(ring.coords)[:, :2]
        for (x0, y0), (x1, y1) in zip(c[:-1], c[1:], strict=True):
            dx, dy = abs(x1 - x0), abs(y1 - y0)
            if dx <= _AXIS_SLOPE * dy:
                vertical.append(((x0 + x1) / 2, dy))
            elif dy <= _AXIS_SLOPE * dx:
                horizontal.append(((y0 + y1) / 2, dx))
            else:
                return None
    return vertical, horizontal


def _clusters(values: list[tuple[float, float]], tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of sorted values spanning at most ``tol``: their (low, high) bounds and length-weighted means."""
    if not values:
        empty = np.zeros(0)
        return empty, empty, empty
    v = np.array(values)
    v = v[np.argsort(v[:, 0], kind="stable")]
    lows, highs, means = [], [], []
    start = 0
    for i in range(1, len(v) + 1):
        if i == len(v) or v[i, 0] - v[start, 0] > tol:
            run = v[start:i]
            weights = run[:, 1] if run[:, 1].sum() > 0 else np.ones(len(run))
            lows.append(run[0, 0])
            highs.append(run[-1, 0])
            means.append(float(np.average(run[:, 0], weights=weights)))
            start = i
    return np.array(lows), np.array(highs), np.array(means)


def _snapper(lows: np.ndarray, highs: np.ndarray, means: np.ndarray):
    """A function moving each value that lies in a cluster to the cluster's mean."""

    def snap(values: np.ndarray) -> np.ndarray:
        if not len(lows):
            return values
        k = np.clip(np.searchsorted(lows, values, side="right") - 1, 0, len(lows) - 1)
        inside = (values >= lows[k] - 1e-9) & (values <= highs[k] + 1e-9)
        return np.where(inside, means[k], values)

    return snap


def snap_to_common_lines(geoms: np.ndarray, angle: float, tol: float) -> np.ndarray:
    """Polygons squared off along ``angle`` (degrees) with walls closer than ``tol`` moved onto one common line
    (their length-weighted mean). Polygons with an edge at another angle, or that snapping would make invalid,
    are returned unchanged."""
    centre = shapely.union_all(geoms).centroid
    rot, origin = _rotation(-angle, (centre.x, centre.y))
    back, _ = _rotation(angle, (centre.x, centre.y))
    rotated = shapely.transform(geoms, lambda xy: (xy - origin) @ rot.T + origin)
    edges = [_axis_edges(g) for g in rotated]
    usable = [e for e in edges if e is not None]
    if not usable:
        return geoms
    snap_x = _snapper(*_clusters([v for e in usable for v in e[0]], tol))
    snap_y = _snapper(*_clusters([h for e in usable for h in e[1]], tol))
    out = np.array(geoms, dtype=object)
    for i, (g, e) in enumerate(zip(rotated, edges, strict=True)):
        if e is None:
            continue
        snapped = shapely.transform(g, lambda xy: np.column_stack([snap_x(xy[:, 0]), snap_y(xy[:, 1])]))
        snapped = shapely.remove_repeated_points(snapped)
        if snapped.is_valid and snapped.area > 0:
            out[i] = shapely.transform(snapped, lambda xy: (xy - origin) @ back.T + origin)
    return out


def _regularize_group(geoms: np.ndarray, tol: float) -> np.ndarray:
    """One group of touching buildings (see the module docstring); the input outlines when it fails."""
    union = _main_part(shapely.union_all(geoms))
    group = regularize_outline(union, tol) if union is not None else None
    angle = outline_angle(group) if group is not None and not group.is_empty else None
    regular = np.array([regularize_outline(g, tol, angle) for g in geoms], dtype=object)
    if angle is not None:
        regular = snap_to_common_lines(regular, angle, tol)
    joined = shapely.union_all(regular)
    outline = shapely.buffer(shapely.buffer(joined, tol, join_style="mitre"), -tol, join_style="mitre")
    shapely.prepare(outline)
    grown = shapely.buffer(regular, tol, join_style="mitre")
    each = []
    for i, g in enumerate(grown):
        others = shapely.union_all(np.delete(regular, i))
        each.append(_main_part(shapely.intersection(shapely.difference(g, others), outline)))
    if any(g is None for g in each):
        return geoms
    outside = box(*outline.buffer(4 * tol).bounds).difference(outline)
    cleaned = shapely.coverage_clean(np.array([*each, outside], dtype=object), gap_width=2 * tol)
    cleaned = shapely.coverage_simplify(cleaned, _COLLINEAR * tol, simplify_boundary=True)[:-1]
    result = [_main_part(g) for g in cleaned]
    if any(g is None for g in result):
        return geoms
    return np.array(result, dtype=object)


def regularize_coverage(geoms: np.ndarray, tol: float) -> np.ndarray:
    """Buildings squared off at the noise scale ``tol`` (units of an isotropic plane); those that touch come out
    as an exact coverage (see the module docstring). A group that cannot be cleaned keeps its input outlines."""
    geoms = np.asarray(geoms, dtype=object)
    out = np.empty(len(geoms), dtype=object)
    if not len(geoms):
        return out
    groups = touching_groups(geoms)
    for label in np.unique(groups):
        members = np.flatnonzero(groups == label)
        if len(members) == 1:
            out[members[0]] = regularize_outline(geoms[members[0]], tol)
        else:
            out[members] = _regularize_group(geoms[members], tol)
    return out
