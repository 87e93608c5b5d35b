"""Facade measurements from a labelled photo, its camera pose and the building footprints, by camera geometry.

Everything here works in a local metric frame (x east, y north, metres; the job uses the scene's UTM zone) with
a flat ground plane at z = 0 and the camera ``camera_height_m`` above it.

Method, per photo:

1. **Level grid.** The label mask is resampled (nearest) onto a grid of azimuth x elevation cells of the photo's
   own angular resolution. Each grid column is then a vertical plane through the camera, whatever the
   projection (pinhole or equirectangular) and the camera's pitch and roll.
2. **Ray casting.** Each column's horizontal ray is intersected with the footprint outlines; the nearest
   crossing wins (occlusion), giving the building, the wall and the horizontal distance ``d``.
3. **Height.** In a column the facade (building, window, door) runs from its top cell to its bottom cell. The
   top counts when sky (or roof) lies directly above it; its elevation angle ``e`` gives ``z = h + d tan e``.
   The base is the facade's bottom edge when ground lies directly below it, else (cars, people, the image
   edge) the ground plane at ``z = 0`` through the camera height. A building's height is the median over its
   columns.
4. **Width.** The angular extent of the columns that hit the building's most-seen wall, widened by half a
   column on each side, is intersected with that wall's line: the visible facade width. It is ``complete``
   when it reaches both ends of the wall.
5. **Floors** (only where the height was measured). Window and facade areas up to the measured top are binned
   by height above the base (0.1 m); bands where the window share is high are window rows. Their spacing is
   the storey height; floors = height / storey height when that agrees with the number of rows (or one more,
   for a storey without windows), else the number of rows; a single row gives height / 3 m (at least 1).
6. **Window-to-wall ratio** = window area / facade area (doors count as wall) in square metres on the walls,
   up to the measured top; cells above it belong to whatever stands behind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import shapely
from shapely import STRtree

from bldgseg.attributes import _texture
from bldgseg.errors import InputError
from bldgseg.street.cameras import Camera

__all__ = [
    "ROLE_NAMES",
    "ClassRoles",
    "Footprints",
    "LevelGrid",
    "RayHits",
    "FacadeObservation",
    "level_grid",
    "cast_rays",
    "measure_photo",
    "floors_from_profile",
]

#: Class names (lower case) playing each role; the LabelMeFacade names are covered.
ROLE_NAMES: dict[str, frozenset[str]] = {
    "wall": frozenset({"building", "facade", "wall", "balcony", "shop", "house", "door"}),
    "window": frozenset({"window", "windows"}),
    "door": frozenset({"door"}),
    "roof": frozenset({"roof"}),
    "sky": frozenset({"sky"}),
    "ground": frozenset({"pavement", "road", "ground", "sidewalk", "street", "terrain", "floor"}),
}
OUTSIDE = 255
PROFILE_BIN_M = 0.1
DEFAULT_STOREY_M = 3.0
WALL_ANGLE_TOLERANCE_DEG = 20.0
FOOTPRINT_SIMPLIFY_M = 0.25
MIN_RUN = 3  # grid cells of facade that make a facade end (fewer: segmentation noise)
MAX_GAP = 2  # grid cells of other classes allowed between a facade end and the sky/ground beyond it


@dataclass(frozen=True)
class ClassRoles:
    """Class ids (indices into the model's classes) of the facade surface, windows, doors, sky/roof and ground."""

    facade: tuple[int, ...]
    window: tuple[int, ...]
    door: tuple[int, ...]
    top: tuple[int, ...]
    ground: tuple[int, ...]

    @classmethod
    def from_names(cls, classes: Sequence[str]) -> ClassRoles:
        """Roles from class names; ``InputError`` when there is no building/facade class or no sky class."""
        names = [str(c).lower() for c in classes]

        def ids(*roles: str) -> tuple[int, ...]:
            wanted = set().union(*(ROLE_NAMES[r] for r in roles))
            return tuple(i for i, n in enumerate(names) if n in wanted)

        roles = cls(
            facade=ids("wall", "window", "door"),
            window=ids("window"),
            door=ids("door"),
            top=ids("sky", "roof"),
            ground=ids("ground"),
        )
        if not set(roles.facade) - set(roles.window):
            raise InputError(f"classes {list(classes)}: no building/facade class; use a facade model")
        if not roles.top:
            raise InputError(f"classes {list(classes)}: no sky class; building tops cannot be found")
        return roles


# -------------------------------------------------------------------------------------------- footprints


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


# -------------------------------------------------------------------------------------------- level grid


@dataclass
class LevelGrid:
    """Labels (and colours) resampled onto azimuth x elevation cells; row 0 is the highest elevation.

    ``azimuth`` (radians clockwise from the frame's north) and ``elevation`` are cell centres, ``step`` the cell
    size in radians, ``top`` the elevation of the grid's upper edge. Cells outside the photo hold ``OUTSIDE``.
    """

    labels: np.ndarray
    rgb: np.ndarray | None
    azimuth: np.ndarray
    elevation: np.ndarray
    step: float
    top: float


def _angular_extent(camera: Camera) -> tuple[float, float, float, float]:
    """(min, max) azimuth relative to the heading and (min, max) elevation covered by the photo."""
    if camera.projection == "equirectangular":
        return -math.pi, math.pi, -math.pi / 2, math.pi / 2
    n = 257
    w, h = camera.width, camera.height
    t = np.linspace(0.0, 1.0, n)
    u = np.r_[t * w, np.full(n, w), t[::-1] * w, np.zeros(n)]
    v = np.r_[np.zeros(n), t * h, np.full(n, h), t[::-1] * h]
    d = camera.pixel_rays(u, v)
    az = np.arctan2(d[:, 0], d[:, 1]) - math.radians(camera.heading_deg)
    az = (az + math.pi) % (2 * math.pi) - math.pi
    el = np.arcsin(np.clip(d[:, 2], -1.0, 1.0))
    lo_az, hi_az, lo_el, hi_el = az.min(), az.max(), el.min(), el.max()
    for sign in (1.0, -1.0):
        _, _, inside = camera.project(np.array([0.0, 0.0, sign]))
        if bool(inside):
            lo_az, hi_az = -math.pi, math.pi
            lo_el, hi_el = (lo_el, math.pi / 2) if sign > 0 else (-math.pi / 2, hi_el)
    return lo_az, hi_az, lo_el, hi_el


def level_grid(
    labels: np.ndarray, camera: Camera, rgb: np.ndarray | None = None, rows: int = 128
) -> LevelGrid:
    """Resample ``labels`` (H x W, class ids) and ``rgb`` (H x W x 3) of a photo onto a level angular grid."""
    height, width = labels.shape
    if (width, height) != (camera.width, camera.height):
        raise ValueError(f"labels are {width}x{height} but the camera is {camera.width}x{camera.height}")
    step = camera.angular_step
    lo_az, hi_az, lo_el, hi_el = _angular_extent(camera)
    n_az = max(1, int(math.ceil((hi_az - lo_az) / step)))
    n_el = max(1, int(math.ceil((hi_el - lo_el) / step)))
    heading = math.radians(camera.heading_deg)
    az = heading + lo_az + (np.arange(n_az) + 0.5) * step
    el = hi_el - (np.arange(n_el) + 0.5) * step
    grid = np.full((n_el, n_az), OUTSIDE, np.uint8)
    colours = np.zeros((n_el, n_az, 3), np.uint8) if rgb is not None else None
    sin_az, cos_az = np.sin(az), np.cos(az)
    for r0 in range(0, n_el, rows):
        e = el[r0 : r0 + rows, None]
        d = np.stack(
            [np.cos(e) * sin_az, np.cos(e) * cos_az, np.broadcast_to(np.sin(e), (len(e), n_az))], axis=-1
        )
        u, v, inside = camera.project(d)
        col = np.clip(np.floor(np.nan_to_num(u)).astype(int), 0, width - 1)
        row = np.clip(np.floor(np.nan_to_num(v)).astype(int), 0, height - 1)
        grid[r0 : r0 + rows] = np.where(inside, labels[row, col], OUTSIDE)
        if colours is not None:
            colours[r0 : r0 + rows] = np.where(inside[..., None], rgb[row, col], 0)
    return LevelGrid(grid, colours, az, el, step, hi_el)


# -------------------------------------------------------------------------------------------- measuring


@dataclass
class FacadeObservation:
    """What one photo measured on one building (lengths in metres, angles in degrees)."""

    building: int
    wall: int
    columns: int
    distance_m: float
    bearing_deg: float
    incidence_deg: float
    height_m: float
    height_columns: int
    height_base: str
    width_m: float
    width_complete: bool
    wall_length_m: float
    floors: float
    storey_height_m: float
    window_rows: int
    window_wall_ratio: float
    facade_area_m2: float
    colour: dict

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(data.pop("colour"))
        return data


def floors_from_profile(
    window_area: np.ndarray, facade_area: np.ndarray, height_m: float, bin_m: float = PROFILE_BIN_M
) -> tuple[float, float, int]:
    """Floors, storey height and number of window rows from window/facade area profiles over height bins."""
    filled = facade_area[facade_area > 0]
    if filled.size == 0:
        return math.nan, math.nan, 0
    enough = facade_area >= 0.2 * float(np.median(filled))  # thin slivers give noisy shares
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(enough, window_area / np.where(enough, facade_area, 1.0), 0.0)
    if frac.size == 0 or frac.max() < 0.05:
        return math.nan, math.nan, 0
    kernel = np.ones(3) / 3.0
    frac = np.convolve(frac, kernel, mode="same")
    above = frac >= 0.5 * frac.max()
    edges = np.flatnonzero(np.diff(np.r_[0, above.astype(int), 0]))
    runs = [[s, e] for s, e in zip(edges[0::2], edges[1::2], strict=True)]
    merged: list[list[int]] = []
    for s, e in runs:
        if merged and (s - merged[-1][1]) * bin_m < 0.4:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    bands = [(s, e) for s, e in merged if (e - s) * bin_m >= 0.3]
    if not bands:
        return math.nan, math.nan, 0
    centres = [
        float(np.average(np.arange(s, e) + 0.5, weights=np.maximum(frac[s:e], 1e-9)) * bin_m)
        for s, e in bands
    ]
    rows = len(bands)
    if rows == 1:
        floors = max(1, round(height_m / DEFAULT_STOREY_M)) if math.isfinite(height_m) else 1
        return float(floors), math.nan, rows
    storey = float(np.median(np.diff(centres)))
    floors = rows
    if math.isfinite(height_m) and storey > 0:
        by_height = int(math.floor(height_m / storey + 0.5))
        if rows <= by_height <= rows + 1:
            floors = by_height
    return float(floors), storey, rows


def _line_param(cx: float, cy: float, az: float, wall: np.ndarray) -> float:
    """Position (metres from the wall's start) where the ray from (cx, cy) at ``az`` meets the wall's line."""
    x0, y0, x1, y1, length = wall
    dx, dy = (x1 - x0) / length, (y1 - y0) / length
    rx, ry = math.sin(az), math.cos(az)
    denom = rx * dy - ry * dx
    if abs(denom) < 1e-9:
        return math.nan
    ax, ay = x0 - cx, y0 - cy
    return (ax * ry - ay * rx) / denom


def _circular_mean(angles: np.ndarray) -> float:
    return math.atan2(float(np.sin(angles).mean()), float(np.cos(angles).mean()))


def _colour_stats(rgb: np.ndarray | None, wall: np.ndarray) -> dict:
    keys = ["facade_mean_r", "facade_mean_g", "facade_mean_b", "facade_std_r", "facade_std_g", "facade_std_b"]
    texture_keys = ["contrast", "homogeneity", "energy", "correlation", "entropy"]
    out = dict.fromkeys(keys + [f"facade_texture_{k}" for k in texture_keys], math.nan)
    if rgb is None or wall.sum() < 4:
        return out
    pixels = rgb[wall].astype(float)
    for i, band in enumerate("rgb"):
        out[f"facade_mean_{band}"] = float(pixels[:, i].mean())
        out[f"facade_std_{band}"] = float(pixels[:, i].std())
    grey = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    for key, value in _texture(grey, wall, 0.0, 256.0).items():
        out[f"facade_{key}"] = value
    return out


def _column_ends(
    g: np.ndarray, facade: np.ndarray, roles: ClassRoles, run: int = MIN_RUN, gap: int = MAX_GAP
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top and bottom facade cell of each grid column, whether sky/roof lies above and ground below, and
    whether the column shows facade at all.

    The ends are those of runs of at least ``run`` facade cells (isolated cells are segmentation noise);
    the sky or ground may lie up to ``gap`` cells away across other classes (boundary pixels), never across
    the photo's edge.
    """
    n_el, n_az = g.shape
    solid = facade.copy()
    for k in range(1, run):
        solid[:-k] &= facade[k:]
    solid[n_el - run + 1 :] = False
    start = np.argmax(solid, axis=0)
    solid_end = facade.copy()
    for k in range(1, run):
        solid_end[k:] &= facade[:-k]
    solid_end[: run - 1] = False
    end = n_el - 1 - np.argmax(solid_end[::-1], axis=0)
    cols = np.arange(n_az)
    top_ok = np.zeros(n_az, bool)
    bottom_ok = np.zeros(n_az, bool)
    blocked_up = np.zeros(n_az, bool)
    blocked_down = np.zeros(n_az, bool)
    for k in range(1, gap + 2):
        up = start - k
        lab = np.where(up >= 0, g[np.clip(up, 0, n_el - 1), cols], OUTSIDE)
        top_ok |= ~blocked_up & np.isin(lab, roles.top)
        blocked_up |= lab == OUTSIDE
        down = end + k
        lab = np.where(down < n_el, g[np.clip(down, 0, n_el - 1), cols], OUTSIDE)
        bottom_ok |= ~blocked_down & np.isin(lab, roles.ground)
        blocked_down |= lab == OUTSIDE
    has = solid.any(axis=0)
    return start, end, top_ok & has, bottom_ok & has, has


def measure_photo(
    labels: np.ndarray,
    roles: ClassRoles,
    camera: Camera,
    x: float,
    y: float,
    camera_height_m: float,
    footprints: Footprints,
    rgb: np.ndarray | None = None,
    max_distance_m: float = 60.0,
    min_columns: int = 5,
    scale_factor: float = 1.0,
) -> list[FacadeObservation]:
    """Measure every footprint seen in one labelled photo.

    ``labels`` (H x W class ids) and ``rgb`` match ``camera``, whose heading is relative to the frame's north;
    (x, y) is the camera position in the frame. ``scale_factor`` is the frame's map scale at the camera (UTM
    k): frame distances are divided by it. A building is measured when at least ``min_columns`` grid columns
    show facade and hit it first; buildings hidden behind nearer ones get no columns.
    """
    grid = level_grid(labels, camera, rgb)
    g = grid.labels
    facade = np.isin(g, roles.facade)
    top, bottom, top_ok, bottom_ok, has = _column_ends(g, facade, roles)
    cols = np.flatnonzero(has)
    if len(cols) == 0:
        return []
    hits = cast_rays(footprints, x, y, grid.azimuth[cols], max_distance_m * scale_factor)
    window = np.isin(g, roles.window)
    wall_only = facade & ~window & ~np.isin(g, roles.door)
    observations = []
    for b in np.unique(hits.building[hits.building >= 0]):
        sel = hits.building == b
        j = cols[sel]
        if len(j) < min_columns:
            continue
        d = hits.distance[sel] / scale_factor
        inc = hits.incidence[sel]
        e_top = grid.top - top[j] * grid.step
        e_bot = grid.top - (bottom[j] + 1) * grid.step
        z_top = camera_height_m + d * np.tan(e_top)
        base = np.where(bottom_ok[j], camera_height_m + d * np.tan(e_bot), 0.0)
        col_height = z_top - base
        usable = top_ok[j] & (col_height > 0.5)
        preferred = usable & ~hits.behind[sel]
        chosen = preferred if preferred.sum() >= min_columns else usable
        if chosen.sum() >= min_columns:
            height = float(np.median(col_height[chosen]))
            base_kind = "ground line" if bottom_ok[j][chosen].mean() >= 0.5 else "camera height"
        else:
            height, base_kind = math.nan, ""

        # areas on the wall: column width x cell height, binned by height above the base
        sub_fac, sub_win = facade[:, j], window[:, j]
        col_w = d * grid.step / np.maximum(np.cos(inc), 0.1)
        tan_el = np.tan(grid.elevation)[:, None]
        z = camera_height_m + d[None, :] * tan_el - base[None, :]
        cell_h = d[None, :] * grid.step * (1.0 + tan_el**2)
        area = cell_h * col_w[None, :]
        # cells above the measured top belong to something farther away (a taller building behind)
        top_z = height + 0.25 if math.isfinite(height) else 200.0
        in_range = sub_fac & (z >= -0.25) & (z <= top_z)
        fac_area = float(area[in_range].sum())
        win_area = float(area[in_range & sub_win].sum())
        wwr = win_area / fac_area if fac_area > 0 else math.nan
        nbins = int(math.ceil(max(z[in_range].max(initial=0.0), 0.1) / PROFILE_BIN_M)) + 1
        bins = np.clip((z / PROFILE_BIN_M).astype(int), 0, nbins - 1)
        fac_profile = np.bincount(bins[in_range], weights=area[in_range], minlength=nbins)
        win_in = in_range & sub_win
        win_profile = np.bincount(bins[win_in], weights=area[win_in], minlength=nbins)
        if math.isfinite(height):
            floors, storey, rows = floors_from_profile(win_profile, fac_profile, height)
        else:  # without the top, window rows only give a lower bound
            floors, storey, rows = math.nan, math.nan, 0

        # width along the most-seen wall
        walls = hits.wall[sel]
        main = int(np.bincount(walls).argmax())
        on = j[walls == main]
        wall = footprints.walls[main]
        centre = _circular_mean(grid.azimuth[on])
        rel = (grid.azimuth[on] - centre + math.pi) % (2 * math.pi) - math.pi  # no seam at +-180 degrees
        half = grid.step / 2.0
        s0 = _line_param(x, y, centre + rel.min() - half, wall)
        s1 = _line_param(x, y, centre + rel.max() + half, wall)
        length = wall[4]
        if math.isfinite(s0) and math.isfinite(s1):
            lo, hi = sorted((min(max(s0, 0.0), length), min(max(s1, 0.0), length)))
            col_end = float(np.max(col_w[walls == main])) * scale_factor
            tol = max(0.3 * scale_factor, 2.0 * col_end, 0.02 * length)
            width = (hi - lo) / scale_factor
            complete = bool(lo <= tol and hi >= length - tol)
        else:
            width, complete = math.nan, False
        bearing = math.degrees(_circular_mean(grid.azimuth[j]))
        observations.append(
            FacadeObservation(
                building=int(b),
                wall=main,
                columns=len(j),
                distance_m=float(np.median(d)),
                bearing_deg=round(bearing % 360.0, 6) % 360.0,
                incidence_deg=float(np.degrees(np.median(inc))),
                height_m=height,
                height_columns=int(chosen.sum()) if math.isfinite(height) else 0,
                height_base=base_kind,
                width_m=float(width),
                width_complete=complete,
                wall_length_m=float(length / scale_factor),
                floors=floors,
                storey_height_m=storey,
                window_rows=rows,
                window_wall_ratio=float(wwr),
                facade_area_m2=fac_area,
                colour=_colour_stats(None if grid.rgb is None else grid.rgb[:, j], wall_only[:, j]),
            )
        )
    return observations
