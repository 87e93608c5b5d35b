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

from bldgseg.errors import InputError
from bldgseg.street.cameras import Camera
from bldgseg.street.level_grid import OUTSIDE, LevelGrid, level_grid
from bldgseg.street.walls import Footprints, cast_rays
from bldgseg.texture import LUMA, TEXTURE_PROPERTIES, glcm_texture

__all__ = ["ROLE_NAMES", "ClassRoles", "FacadeObservation", "floors_from_profile", "measure_photo"]

#: Class names (lower case) playing each role; the LabelMeFacade names are covered.
ROLE_NAMES: dict[str, frozenset[str]] = {
    "wall": frozenset({"building", "facade", "wall", "balcony", "shop", "house", "door"}),
    "window": frozenset({"window", "windows"}),
    "door": frozenset({"door"}),
    "roof": frozenset({"roof"}),
    "sky": frozenset({"sky"}),
    "ground": frozenset({"pavement", "road", "ground", "sidewalk", "street", "terrain", "floor"}),
}
PROFILE_BIN_M = 0.1
DEFAULT_STOREY_M = 3.0
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
    """Mean, spread and GLCM texture of the wall cells' colours (NaN with fewer than 4 cells)."""
    keys = ["facade_mean_r", "facade_mean_g", "facade_mean_b", "facade_std_r", "facade_std_g", "facade_std_b"]
    out = dict.fromkeys(keys + [f"facade_texture_{k}" for k in TEXTURE_PROPERTIES], math.nan)
    if rgb is None or wall.sum() < 4:
        return out
    pixels = rgb[wall].astype(float)
    for i, band in enumerate("rgb"):
        out[f"facade_mean_{band}"] = float(pixels[:, i].mean())
        out[f"facade_std_{band}"] = float(pixels[:, i].std())
    grey = rgb.astype(float) @ LUMA
    for key, value in glcm_texture(grey, wall, 0.0, 256.0).items():
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


@dataclass
class _View:
    """One photo on its level grid: class masks, each column's facade ends, and the camera height."""

    grid: LevelGrid
    facade: np.ndarray
    window: np.ndarray
    wall_only: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    top_ok: np.ndarray
    bottom_ok: np.ndarray
    camera_height_m: float


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
    view = _View(grid, facade, window, wall_only, top, bottom, top_ok, bottom_ok, camera_height_m)
    observations = []
    for b in np.unique(hits.building[hits.building >= 0]):
        sel = hits.building == b
        if sel.sum() < min_columns:
            continue
        j = cols[sel]
        d = hits.distance[sel] / scale_factor
        inc = hits.incidence[sel]
        height, base_kind, height_columns, base = _facade_height(view, j, d, hits.behind[sel], min_columns)
        col_w, fac_area, wwr, (floors, storey, rows) = _wall_areas(view, j, d, inc, base, height)
        walls = hits.wall[sel]
        main = int(np.bincount(walls).argmax())
        wall = footprints.walls[main]
        width, complete = _visible_width(grid, j[walls == main], col_w[walls == main], wall, x, y, scale_factor)
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
                height_columns=height_columns,
                height_base=base_kind,
                width_m=float(width),
                width_complete=complete,
                wall_length_m=float(wall[4] / scale_factor),
                floors=floors,
                storey_height_m=storey,
                window_rows=rows,
                window_wall_ratio=float(wwr),
                facade_area_m2=fac_area,
                colour=_colour_stats(None if grid.rgb is None else grid.rgb[:, j], wall_only[:, j]),
            )
        )
    return observations


def _facade_height(
    view: _View, j: np.ndarray, d: np.ndarray, behind: np.ndarray, min_columns: int
) -> tuple[float, str, int, np.ndarray]:
    """(height, base kind, columns used, base z per column) of a building seen in grid columns ``j``.

    Each column's height runs from the facade top (sky/roof above it) to its bottom edge (ground below it)
    or else the ground plane; columns with something of another building behind them are preferred.
    """
    grid, cam_h = view.grid, view.camera_height_m
    e_top = grid.top - view.top[j] * grid.step
    e_bot = grid.top - (view.bottom[j] + 1) * grid.step
    z_top = cam_h + d * np.tan(e_top)
    base = np.where(view.bottom_ok[j], cam_h + d * np.tan(e_bot), 0.0)
    col_height = z_top - base
    usable = view.top_ok[j] & (col_height > 0.5)
    preferred = usable & ~behind
    chosen = preferred if preferred.sum() >= min_columns else usable
    if chosen.sum() < min_columns:
        return math.nan, "", 0, base
    base_kind = "ground line" if view.bottom_ok[j][chosen].mean() >= 0.5 else "camera height"
    return float(np.median(col_height[chosen])), base_kind, int(chosen.sum()), base


def _wall_areas(
    view: _View, j: np.ndarray, d: np.ndarray, inc: np.ndarray, base: np.ndarray, height: float
) -> tuple[np.ndarray, float, float, tuple[float, float, int]]:
    """Column widths on the wall, facade area, window-to-wall ratio and (floors, storey height, window rows).

    Areas are column width x cell height on the wall, binned by height above the base; cells above the
    measured top belong to something farther away (a taller building behind).
    """
    grid = view.grid
    sub_fac, sub_win = view.facade[:, j], view.window[:, j]
    col_w = d * grid.step / np.maximum(np.cos(inc), 0.1)
    tan_el = np.tan(grid.elevation)[:, None]
    z = view.camera_height_m + d[None, :] * tan_el - base[None, :]
    cell_h = d[None, :] * grid.step * (1.0 + tan_el**2)
    area = cell_h * col_w[None, :]
    top_z = height + 0.25 if math.isfinite(height) else 200.0
    in_range = sub_fac & (z >= -0.25) & (z <= top_z)
    fac_area = float(area[in_range].sum())
    win_area = float(area[in_range & sub_win].sum())
    wwr = win_area / fac_area if fac_area > 0 else math.nan
    if not math.isfinite(height):  # without the top, window rows only give a lower bound
        return col_w, fac_area, wwr, (math.nan, math.nan, 0)
    nbins = int(math.ceil(max(z[in_range].max(initial=0.0), 0.1) / PROFILE_BIN_M)) + 1
    bins = np.clip((z / PROFILE_BIN_M).astype(int), 0, nbins - 1)
    fac_profile = np.bincount(bins[in_range], weights=area[in_range], minlength=nbins)
    win_in = in_range & sub_win
    win_profile = np.bincount(bins[win_in], weights=area[win_in], minlength=nbins)
    return col_w, fac_area, wwr, floors_from_profile(win_profile, fac_profile, height)


def _visible_width(
    grid: LevelGrid, on: np.ndarray, col_w: np.ndarray, wall: np.ndarray, x: float, y: float, scale: float
) -> tuple[float, bool]:
    """Width of ``wall`` seen in grid columns ``on`` (widened by half a column each side), and whether the
    view reaches both of its ends; ``col_w`` are those columns' widths on the wall (metres)."""
    centre = _circular_mean(grid.azimuth[on])
    rel = (grid.azimuth[on] - centre + math.pi) % (2 * math.pi) - math.pi  # no seam at +-180 degrees
    half = grid.step / 2.0
    s0 = _line_param(x, y, centre + rel.min() - half, wall)
    s1 = _line_param(x, y, centre + rel.max() + half, wall)
    length = wall[4]
    if not (math.isfinite(s0) and math.isfinite(s1)):
        return math.nan, False
    lo, hi = sorted((min(max(s0, 0.0), length), min(max(s1, 0.0), length)))
    tol = max(0.3 * scale, 2.0 * float(np.max(col_w)) * scale, 0.02 * length)
    return (hi - lo) / scale, bool(lo <= tol and hi >= length - tol)
