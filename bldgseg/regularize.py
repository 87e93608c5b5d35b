"""Building outline regularization: edges snapped to the dominant direction or its perpendicular."""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from shapely.geometry import Polygon

__all__ = ["outline_angle", "regularize_metric", "regularize_outline", "regularize_polygon"]

# regularize_polygon: result area must stay within this fraction of the input's, else the fallback is used
_MAX_AREA_CHANGE = 0.2
# fallback to the minimum rotated rectangle only for shapes that already nearly fill it
_MRR_FALLBACK_RECTANGULARITY = 0.85
# details below these fractions of sqrt(area) are outline noise (side segmentation, shortest run kept)
_SIDE_TOL_FRACTION = 0.05
_MIN_RUN_FRACTION = 0.08
_COARSE_TOL_FRACTION = 0.15
# choosing among candidate directions: IoU with the input minus this per extra corner (staircases lose)
_CORNER_PENALTY = 0.01
# a preferred direction (regularize_outline's angle) wins unless another scores this much better
_PREFERRED_BONUS = 0.02
# below this IoU with the input the outline is not orthogonal (e.g. a crossing of two wings at 45 degrees)
_MIN_IOU = 0.8


def regularize_metric(
    gdf: gpd.GeoDataFrame, mgeoms: np.ndarray, transform: Affine, simplify_m: float
) -> np.ndarray:
    """Regularize the metric copies ``mgeoms`` of ``gdf``'s polygons (noise scale: a pixel, or ``simplify_m``)."""
    # ground size of one pixel for each polygon: metric / source area ratio times the source pixel area
    src_area = shapely.area(np.asarray(gdf.geometry.values, dtype=object))
    pix_area = abs(transform.a * transform.e - transform.b * transform.d)
    with np.errstate(divide="ignore", invalid="ignore"):
        pixel_m = np.sqrt(np.where(src_area > 0, shapely.area(mgeoms) / src_area * pix_area, 0.0))
    tol = np.maximum(pixel_m, simplify_m)
    regular = [
        _regularize(g, float(t)) if isinstance(g, Polygon) else g for g, t in zip(mgeoms, tol, strict=True)
    ]
    return np.array(regular, dtype=object)


def _open_ring(coords: Any) -> np.ndarray:
    pts = np.asarray(coords, dtype=np.float64)[:, :2]
    if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
        pts = pts[:-1]
    return pts


def _side_breaks(pts: np.ndarray, tol: float) -> np.ndarray:
    """Indices (into the closed ring ``pts + pts[0]``) of the vertices Douglas-Peucker keeps at ``tol``."""
    n = len(pts)
    closed = np.vstack([pts, pts[:1]])
    if tol <= 0:
        return np.arange(n + 1)
    simple = shapely.simplify(shapely.LineString(closed), tol, preserve_topology=True)
    where = {tuple(p): i for i, p in enumerate(pts)}
    idx = [where.get(tuple(p), -1) for p in np.asarray(simple.coords)[:-1]]
    idx = [*idx, n]
    if -1 in idx or idx[0] != 0 or np.any(np.diff(idx) <= 0):
        return np.arange(n + 1)
    return np.asarray(idx)


def _sides(pts: np.ndarray, tol: float) -> list[np.ndarray]:
    """The ring cut into sides at the Douglas-Peucker vertices; each side is its run of original vertices."""
    closed = np.vstack([pts, pts[:1]])
    br = _side_breaks(pts, tol)
    return [closed[a : b + 1] for a, b in zip(br[:-1], br[1:], strict=True)]


def _side_direction(side: np.ndarray) -> np.ndarray:
    """Total-least-squares direction of a side's vertices (the chord for two vertices), unit length."""
    chord = side[-1] - side[0]
    if len(side) > 2:
        c = side - side.mean(axis=0)
        sxx, syy, sxy = (
            float(np.dot(c[:, 0], c[:, 0])),
            float(np.dot(c[:, 1], c[:, 1])),
            float(np.dot(c[:, 0], c[:, 1])),
        )
        a = 0.5 * math.atan2(2.0 * sxy, sxx - syy)
        d = np.array([math.cos(a), math.sin(a)])
        return d if np.dot(d, chord) >= 0 else -d
    n = float(np.hypot(*chord))
    return chord / n if n > 0 else chord


def _dominant_angle(sides: list[np.ndarray]) -> float | None:
    """Dominant direction in degrees, [0, 90): peak of the length-weighted histogram of side angles mod 90."""
    if not sides:
        return None
    d = np.array([_side_direction(s) for s in sides])
    w = np.array([np.hypot(*(s[-1] - s[0])) for s in sides])
    ok = (w > 0) & np.isfinite(d).all(axis=1)
    if not ok.any():
        return None
    theta = np.mod(np.degrees(np.arctan2(d[ok, 1], d[ok, 0])), 90.0)
    w = w[ok]
    hist = np.bincount(np.floor(theta).astype(int) % 90, weights=w, minlength=90)
    wrapped = np.concatenate([hist[-2:], hist, hist[:2]])
    smooth = np.convolve(wrapped, [1.0, 2.0, 3.0, 2.0, 1.0], mode="valid")  # circular, +-2 degrees
    peak = float(np.argmax(smooth)) + 0.5
    diff = np.mod(theta - peak + 45.0, 90.0) - 45.0
    near = np.abs(diff) <= 7.5
    if near.any():
        peak += float(np.sum(w[near] * diff[near]) / np.sum(w[near]))
    return float(np.mod(peak, 90.0))


def _mrr_angle(polygon: Polygon) -> float:
    c = np.asarray(polygon.minimum_rotated_rectangle.exterior.coords)
    if len(c) < 3:
        return 0.0
    return float(np.mod(np.degrees(np.arctan2(c[1, 1] - c[0, 1], c[1, 0] - c[0, 0])), 90.0))


def _noise_tolerance(polygon: Polygon) -> float:
    """Outline noise scale: about one grid step (short-edge length), capped relative to the building size."""
    d = np.diff(np.asarray(polygon.exterior.coords)[:, :2], axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    length = length[length > 1e-9]
    if len(length) == 0:
        return 0.0
    return float(min(np.percentile(length, 10), 0.08 * math.sqrt(polygon.area)))


class _Run:
    """Consecutive sides snapped to one axis; the offset keeps the area under the original outline."""

    __slots__ = ("horizontal", "start", "end", "iy", "ix")

    def __init__(self, horizontal: bool, side: np.ndarray) -> None:
        self.horizontal = horizontal
        self.start, self.end = side[0], side[-1]
        x, y = side[:, 0], side[:, 1]
        self.iy = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)  # integral of y dx
        self.ix = float(np.sum((x[1:] + x[:-1]) * np.diff(y)) / 2)  # integral of x dy

    def extend(self, other: _Run) -> None:
        self.end = other.end
        self.iy += other.iy
        self.ix += other.ix

    @property
    def offset(self) -> float:
        if self.horizontal:
            span = self.end[0] - self.start[0]
            return self.iy / span if abs(span) > 1e-9 else float(self.start[1] + self.end[1]) / 2
        span = self.end[1] - self.start[1]
        return self.ix / span if abs(span) > 1e-9 else float(self.start[0] + self.end[0]) / 2


def _snap_ring(sides: list[np.ndarray], min_run: float) -> np.ndarray | None:
    """Snap a ring's sides (in the rotated frame) to axis-parallel lines; ``None`` when degenerate.

    Consecutive sides of one class (horizontal or vertical) merge into one line whose offset preserves the
    area under the original vertices; runs shorter than ``min_run`` are removed (their two neighbours merge);
    corners are the intersections of consecutive lines.
    """
    classes = []
    for s in sides:
        chord = s[-1] - s[0]
        classes.append(bool(abs(chord[0]) >= abs(chord[1])))
    cls = np.asarray(classes)
    if len(sides) < 4 or cls.all() or not cls.any():
        return None
    start = int(np.flatnonzero(cls != np.roll(cls, 1))[0])
    runs: list[_Run] = []
    for k in range(len(sides)):
        i = (start + k) % len(sides)
        if runs and runs[-1].horizontal == cls[i]:
            runs[-1].extend(_Run(bool(cls[i]), sides[i]))
        else:
            runs.append(_Run(bool(cls[i]), sides[i]))
    while len(runs) > 4:
        m = len(runs)
        offs = [r.offset for r in runs]
        lengths = [abs(offs[(k + 1) % m] - offs[(k - 1) % m]) for k in range(m)]
        k = int(np.argmin(lengths))
        if lengths[k] >= min_run:
            break
        a, b = (k - 1) % m, (k + 1) % m
        runs[a].extend(runs[k])
        runs[a].extend(runs[b])
        runs = [runs[j] for j in range(m) if j not in (k, b)]
    m = len(runs)
    if m < 4 or m % 2:
        return None
    offs = [r.offset for r in runs]
    corners = []
    for k in range(m):
        j = (k + 1) % m
        corners.append((offs[j], offs[k]) if runs[k].horizontal else (offs[k], offs[j]))
    corners.append(corners[0])
    return np.asarray(corners)


def _fallback(polygon: Polygon, tol: float) -> Polygon:
    """The minimum rotated rectangle when the input nearly fills it, else the input simplified by ``tol``."""
    mrr = polygon.minimum_rotated_rectangle
    if isinstance(mrr, Polygon) and mrr.area > 0 and polygon.area / mrr.area >= _MRR_FALLBACK_RECTANGULARITY:
        return mrr
    if tol > 0:
        simple = polygon.simplify(tol, preserve_topology=True)
        if isinstance(simple, Polygon) and simple.is_valid and not simple.is_empty:
            return simple
    return polygon


def _rotate(pts: np.ndarray, angle_deg: float, origin: np.ndarray) -> np.ndarray:
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (pts - origin) @ rot.T + origin


def _snap_polygon(
    polygon: Polygon, ring_sides: list[list[np.ndarray]], angle: float, tol: float
) -> Polygon | None:
    """Every ring's sides snapped along ``angle`` (degrees); ``None`` when the shell degenerates."""
    area = polygon.area
    origin = np.asarray(polygon.centroid.coords[0])
    rotated = [[_rotate(s, -angle, origin) for s in rs] for rs in ring_sides]
    min_run = max(2.0 * tol, _MIN_RUN_FRACTION * math.sqrt(area))
    shell = _snap_ring(rotated[0], min_run)
    if shell is None:
        return None
    shell_poly = Polygon(shell)
    if not shell_poly.is_valid or shell_poly.area <= 0:
        return None
    holes: list[Polygon] = []
    for ring, sides in zip(polygon.interiors, rotated[1:], strict=True):
        hole_min_run = max(2.0 * tol, _MIN_RUN_FRACTION * math.sqrt(Polygon(ring).area))
        snapped = _snap_ring(sides, hole_min_run)
        if snapped is None:
            continue
        hp = Polygon(snapped)
        if hp.area < min_run**2:  # a hole smaller than the shortest wall kept is outline noise
            continue
        if hp.is_valid and shell_poly.contains(hp) and all(hp.disjoint(o) for o in holes):
            holes.append(hp)
    back = _rotate(shell, angle, origin)
    result = Polygon(back, [_rotate(np.asarray(h.exterior.coords), angle, origin) for h in holes])
    if not result.is_valid:
        result = Polygon(back)
    result = shapely.remove_repeated_points(result)
    if (
        not isinstance(result, Polygon)
        or not result.is_valid
        or result.is_empty
        or abs(result.area / area - 1.0) > _MAX_AREA_CHANGE
    ):
        return None
    return result


def regularize_outline(polygon: Any, tol: float, angle: float | None = None) -> Any:
    """:func:`regularize_polygon` with the outline-noise scale ``tol`` given (polygon units, e.g. one pixel) and,
    optionally, a preferred direction (degrees mod 90: a neighbour's) that wins unless another scores clearly
    better; anything but a Polygon comes back unchanged."""
    return _regularize(polygon, tol, angle) if isinstance(polygon, Polygon) else polygon


def outline_angle(polygon: Polygon) -> float:
    """Direction (degrees mod 90) of the longest edge of a polygon's exterior."""
    c = np.asarray(polygon.exterior.coords)[:, :2]
    d = np.diff(c, axis=0)
    k = int(np.argmax(np.hypot(d[:, 0], d[:, 1])))
    return float(np.mod(np.degrees(np.arctan2(d[k, 1], d[k, 0])), 90.0))


def _regularize(polygon: Polygon, tol: float, angle: float | None = None) -> Polygon:
    """``regularize_polygon`` with the outline-noise tolerance ``tol`` (polygon units) given; ``angle``: a
    preferred direction, tried first and winning unless another scores ``_PREFERRED_BONUS`` better."""
    if not isinstance(polygon, Polygon) or polygon.is_empty or not polygon.area > 0:
        return polygon
    scale = math.sqrt(polygon.area)
    rings = [_open_ring(polygon.exterior.coords)] + [_open_ring(r.coords) for r in polygon.interiors]
    if len(rings[0]) < 3:
        return _fallback(polygon, tol)
    ring_sides = [_sides(r, max(tol, _SIDE_TOL_FRACTION * scale)) for r in rings]
    # candidate directions: the side histogram at two scales and the minimum rotated rectangle's
    preferred = angle
    candidates = [] if preferred is None else [preferred]
    candidates.append(_dominant_angle([s for rs in ring_sides for s in rs]))
    candidates.append(_dominant_angle(_sides(rings[0], max(tol, _COARSE_TOL_FRACTION * scale))))
    candidates.append(_mrr_angle(polygon))
    best: Polygon | None = None
    best_score = best_iou = -math.inf
    tried: list[float] = []
    for angle in candidates:
        if angle is None or any(abs((angle - a + 45.0) % 90.0 - 45.0) < 0.5 for a in tried):
            continue
        tried.append(angle)
        result = _snap_polygon(polygon, ring_sides, angle, tol)
        if result is None:
            continue
        inter = result.intersection(polygon).area
        iou = inter / (result.area + polygon.area - inter)
        score = iou - _CORNER_PENALTY * (len(result.exterior.coords) - 5)
        if angle is preferred:
            score += _PREFERRED_BONUS
        if score > best_score:
            best, best_score, best_iou = result, score, iou
    if best is None or best_iou < _MIN_IOU:
        return _fallback(polygon, tol)
    return best


def regularize_polygon(polygon: Polygon) -> Polygon:
    """Orthogonalize a building outline along its dominant direction; the result is a valid Polygon.

    The outline is cut into sides by Douglas-Peucker at its noise scale (its 10th-percentile edge length, e.g.
    one pixel for a raw pixel outline, capped at 8 % of sqrt(area), and at least 5 % of sqrt(area)). Candidate
    directions are the peak of the length-weighted histogram of the sides' least-squares directions mod 90
    degrees, the same at a coarser scale, and the minimum rotated rectangle's; for each, every side is snapped
    to the direction or its perpendicular at the offset that preserves the area under the original vertices,
    collinear runs merge, runs shorter than max(2 x noise scale, 8 % of sqrt(area)) are dropped and corners
    are the intersections of consecutive lines; the candidate with the best IoU with the input (less 0.01 per
    corner beyond 4) wins. Holes are snapped the same way; those that degenerate, shrink below the shortest
    wall squared or no longer fit are dropped. When no candidate gives a valid polygon within 20 % of the
    input's area with an IoU of at least 0.8 (non-orthogonal outlines), the minimum rotated rectangle is
    returned for near-rectangular inputs (>= 85 % of it filled), else the input simplified at its noise
    scale. Works in the polygon's own units, which must be metric and isotropic (see
    :func:`bldgseg.geo_metric.to_metric`).
    """
    if not isinstance(polygon, Polygon) or polygon.is_empty or not polygon.area > 0:
        return polygon
    return _regularize(polygon, _noise_tolerance(polygon))
