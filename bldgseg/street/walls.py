"""Footprint walls in the local metric frame (segments grouped into walls) and horizontal rays cast onto them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import STRtree

__all__ = ["FOOTPRINT_SIMPLIFY_M", "WALL_ANGLE_TOLERANCE_DEG", "Footprints", "RayHits", "cast_rays"]

#: Consecutive outline segments turning by less than this belong to one wall.
WALL_ANGLE_TOLERANCE_DEG = 20.0
#: Footprints are simplified by this much (metres) before their walls are found.
FOOTPRINT_SIMPLIFY_M = 0.25


def _walls(ring: np.ndarray, tolerance_deg: float) -> np.ndarray:
    """Wall number of each segment of a closed ring: consecutive segments within the angle tolerance join."""
    seg = np.diff(ring, axis=0)
    n = len(seg)
    ang = np.arctan2(seg[:, 1], seg[:, 0])
    tol = math.radians(tolerance_deg)

    def turn(a: float, b: float) -> float:
        return abs((a - b + math.pi) % (2 * math.pi) - math.pi)

    breaks = [i for i in range(n) if turn(ang[i], ang[i - 1]) > tol]
    start = breaks[0] if breaks else 0
    wall = np.zeros(n, dtype=int)
    current, ref = 0, ang[start]
    for k in range(1, n):
        i = (start + k) % n
        if turn(ang[i], ang[i - 1]) > tol or turn(ang[i], ref) > tol:
            current += 1
            ref = ang[i]
        wall[i] = current
    return wall


@dataclass
class Footprints:
    """Footprint outlines in the local metric frame, split into segments for ray casting.

    ``segments`` (M x 4: x0, y0, x1, y1), ``building`` (M: index into ``ids``) and ``wall`` (M: a global wall
    number; consecutive nearly collinear segments of one ring share a wall). ``walls`` (W x 5: x0, y0, x1, y1,
    length) holds each wall's end points.
    """

    ids: np.ndarray
    polygons: list
    segments: np.ndarray
    building: np.ndarray
    wall: np.ndarray
    walls: np.ndarray
    tree: STRtree

    @classmethod
    def from_geometries(
        cls, geometries: Sequence, ids: Sequence | None = None, simplify_m: float = FOOTPRINT_SIMPLIFY_M
    ) -> Footprints:
        """Polygons/MultiPolygons in metres (``ids`` default to their positions); lightly simplified."""
        geoms = np.asarray(list(geometries), dtype=object)
        ids_arr = np.arange(len(geoms)) if ids is None else np.asarray(list(ids))
        segs, owner, wall_of, walls = [], [], [], []
        polygons = []
        for index, geom in enumerate(geoms):
            if geom is None or geom.is_empty:
                polygons.append(shapely.Polygon())
                continue
            geom = shapely.simplify(geom, simplify_m, preserve_topology=True) if simplify_m else geom
            polygons.append(geom)
            parts = geom.geoms if hasattr(geom, "geoms") else [geom]
            for part in parts:
                for ring in [part.exterior, *part.interiors]:
                    xy = np.asarray(ring.coords)[:, :2]
                    keep = np.r_[True, np.any(np.diff(xy, axis=0) != 0, axis=1)]
                    xy = xy[keep]
                    if len(xy) < 4:
                        continue
                    numbers = _walls(xy, WALL_ANGLE_TOLERANCE_DEG) + len(walls)
                    for number in np.unique(numbers):
                        idx = np.flatnonzero(numbers == number)
                        if (np.diff(idx) > 1).any():  # the wall wraps past the ring's start
                            split = np.flatnonzero(np.diff(idx) > 1)[0] + 1
                            idx = np.r_[idx[split:], idx[:split]]
                        a, b = xy[idx[0]], xy[idx[-1] + 1]
                        walls.append((a[0], a[1], b[0], b[1], float(np.hypot(*(b - a)))))
                    segs.append(np.c_[xy[:-1], xy[1:]])
                    owner.append(np.full(len(xy) - 1, index))
                    wall_of.append(numbers)
        seg_arr = np.concatenate(segs) if segs else np.zeros((0, 4))
        return cls(
            ids=ids_arr,
            polygons=polygons,
            segments=seg_arr,
            building=np.concatenate(owner) if owner else np.zeros(0, int),
            wall=np.concatenate(wall_of) if wall_of else np.zeros(0, int),
            walls=np.asarray(walls, dtype=float).reshape(-1, 5),
            tree=STRtree(polygons),
        )

    def near(self, x: float, y: float, radius: float) -> np.ndarray:
        """Indices of the segments of footprints within ``radius`` of (x, y)."""
        found = self.tree.query(shapely.Point(x, y).buffer(radius))
        return np.flatnonzero(np.isin(self.building, found))

    def containing(self, x: float, y: float) -> int:
        """Index of the footprint containing (x, y), or -1."""
        found = self.tree.query(shapely.Point(x, y), predicate="within")
        return int(found[0]) if len(found) else -1


@dataclass
class RayHits:
    """Nearest footprint crossing of each horizontal ray (``building`` -1 and ``distance`` inf for none)."""

    building: np.ndarray
    wall: np.ndarray
    distance: np.ndarray
    incidence: np.ndarray
    behind: np.ndarray


def cast_rays(
    footprints: Footprints, x: float, y: float, azimuths: np.ndarray, max_distance: float, chunk: int = 256
) -> RayHits:
    """Cast horizontal rays from (x, y) at ``azimuths`` (radians clockwise from the frame's north).

    ``incidence`` is the angle between the ray and the wall's normal; ``behind`` says whether another
    building's outline is crossed farther along the ray within ``max_distance``.
    """
    az = np.asarray(azimuths, dtype=float)
    k = len(az)
    out = RayHits(
        building=np.full(k, -1),
        wall=np.full(k, -1),
        distance=np.full(k, np.inf),
        incidence=np.full(k, np.nan),
        behind=np.zeros(k, bool),
    )
    near = footprints.near(x, y, max_distance)
    if k == 0 or len(near) == 0:
        return out
    seg = footprints.segments[near]
    owner = footprints.building[near]
    ax, ay = seg[:, 0] - x, seg[:, 1] - y
    ex, ey = seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]
    elen = np.hypot(ex, ey)
    for start in range(0, k, chunk):
        rx = np.sin(az[start : start + chunk])[:, None]
        ry = np.cos(az[start : start + chunk])[:, None]
        denom = rx * ey - ry * ex
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (ax * ey - ay * ex) / denom
            s = (ax * ry - ay * rx) / denom
        ok = (np.abs(denom) > 1e-12) & (t > 1e-9) & (s >= 0.0) & (s <= 1.0) & (t <= max_distance)
        t = np.where(ok, t, np.inf)
        first = np.argmin(t, axis=1)
        rows = np.arange(len(first))
        best = t[rows, first]
        hit = np.isfinite(best)
        sl = slice(start, start + len(first))
        out.distance[sl] = best
        out.building[sl] = np.where(hit, owner[first], -1)
        out.wall[sl] = np.where(hit, footprints.wall[near][first], -1)
        cos_inc = np.abs(denom[rows, first]) / elen[first]
        out.incidence[sl] = np.where(hit, np.arccos(np.clip(cos_inc, 0.0, 1.0)), np.nan)
        other = np.where(owner[None, :] != np.where(hit, owner[first], -1)[:, None], t, np.inf)
        out.behind[sl] = hit & np.isfinite(other.min(axis=1))
    return out
