"""A small numpy ray-caster for street-level tests: box buildings with window rows on a flat ground plane.

It renders label masks (LabelMeFacade class ids) and, for the bundled example, plausible RGB photos, seen from
pinhole or equirectangular cameras at known poses. Its camera is built independently of
``bldgseg.street.cameras`` (a look-at frame rather than composed rotation matrices) so that the geometry code
is checked against it, not against itself. ``scripts/make_street_example.py`` imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

VARIOUS, BUILDING, CAR, DOOR, PAVEMENT, ROAD, SKY, VEGETATION, WINDOW = range(9)
CLASSES = ("various", "building", "car", "door", "pavement", "road", "sky", "vegetation", "window")


@dataclass(frozen=True)
class Box:
    """An upright box: corner (x0, y0), ``length`` along its local x axis (``angle_deg`` counter-clockwise from
    east), ``depth`` along local y. Buildings get ``storeys`` rows of windows on every wall and a door on the
    wall at local y = 0; other labels (car, vegetation) are plain."""

    x0: float
    y0: float
    length: float
    depth: float
    height: float
    storeys: int = 0
    angle_deg: float = 0.0
    label: int = BUILDING
    storey_m: float | None = None
    window_w: float = 1.2
    window_h: float = 1.4
    sill: float = 0.9
    spacing: float = 2.6
    margin: float = 0.8
    door: bool = True
    colour: tuple[int, int, int] = (200, 170, 140)

    @property
    def storey(self) -> float:
        return self.storey_m or self.height / max(self.storeys, 1)

    def corners(self) -> np.ndarray:
        """Footprint corners (4 x 2), counter-clockwise."""
        a = math.radians(self.angle_deg)
        ux, uy = math.cos(a), math.sin(a)
        vx, vy = -math.sin(a), math.cos(a)
        local = [(0, 0), (self.length, 0), (self.length, self.depth), (0, self.depth)]
        return np.array([(self.x0 + p * ux + q * vx, self.y0 + p * uy + q * vy) for p, q in local])

    def window_columns(self, face_len: float) -> list[tuple[float, float]]:
        """Horizontal extents of the window columns on a wall ``face_len`` long, centred."""
        n = int((face_len - 2 * self.margin + (self.spacing - self.window_w)) // self.spacing)
        if n < 1:
            return []
        span = n * self.spacing - (self.spacing - self.window_w)
        start = (face_len - span) / 2.0
        return [(start + i * self.spacing, start + i * self.spacing + self.window_w) for i in range(n)]

    def window_wall_ratio(self, face_len: float, front: bool = True) -> float:
        """Window area / wall area of one wall (doors count as wall)."""
        cols = self.window_columns(face_len)
        windows = len(cols) * self.storeys
        if front and self.door and cols:
            windows -= 1
        return windows * self.window_w * self.window_h / (face_len * self.height)


@dataclass(frozen=True)
class Shot:
    """A camera for the renderer: position (x, y), height above the ground, orientation, image size and
    horizontal field of view (ignored for panoramas)."""

    x: float
    y: float
    height_m: float
    heading_deg: float
    width: int
    height: int
    hfov_deg: float = 60.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0
    projection: str = "pinhole"


def shot_rays(shot: Shot) -> np.ndarray:
    """World (east, north, up) ray directions (H x W x 3) through the pixel centres, from a look-at frame."""
    h, p, r = (math.radians(v) for v in (shot.heading_deg, shot.pitch_deg, shot.roll_deg))
    forward = np.array([math.sin(h) * math.cos(p), math.cos(h) * math.cos(p), math.sin(p)])
    right0 = np.array([math.cos(h), -math.sin(h), 0.0])
    up0 = np.cross(right0, forward)
    right = math.cos(r) * right0 - math.sin(r) * up0
    up = math.sin(r) * right0 + math.cos(r) * up0
    u = (np.arange(shot.width) + 0.5)[None, :]
    v = (np.arange(shot.height) + 0.5)[:, None]
    if shot.projection == "equirectangular":
        az = (u / shot.width - 0.5) * 2 * math.pi
        el = (0.5 - v / shot.height) * math.pi
        a = (np.cos(el) * np.cos(az))[..., None]
        b = (np.cos(el) * np.sin(az))[..., None]
        c = np.broadcast_to(np.sin(el), (shot.height, shot.width))[..., None]
        d = a * forward + b * right + c * up
    else:
        f = shot.width / (2 * math.tan(math.radians(shot.hfov_deg) / 2))
        x = ((u - shot.width / 2) / f)[..., None]
        y = ((v - shot.height / 2) / f)[..., None]
        d = forward + x * right - y * up
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _box_hit(box: Box, origin: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to the box along each ray (inf for a miss), the face axis hit (0: x walls, 1: y walls, 2: roof)
    and the hit point in box coordinates."""
    a = math.radians(box.angle_deg)
    rot = np.array([[math.cos(a), math.sin(a), 0], [-math.sin(a), math.cos(a), 0], [0, 0, 1]])
    o = rot @ (origin - np.array([box.x0, box.y0, 0.0]))
    d = rays @ rot.T
    lo = np.array([0.0, 0.0, 0.0])
    hi = np.array([box.length, box.depth, box.height])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - o) / d
        t2 = (hi - o) / d
    t1 = np.where(np.isnan(t1), -np.inf, t1)
    t2 = np.where(np.isnan(t2), np.inf, t2)
    near = np.minimum(t1, t2)
    far = np.maximum(t1, t2)
    t_near = near.max(axis=-1)
    axis = near.argmax(axis=-1)
    t_far = far.min(axis=-1)
    hit = (t_near <= t_far) & (t_near > 1e-9)
    t = np.where(hit, t_near, np.inf)
    point = o + np.where(hit, t_near, 0.0)[..., None] * d
    return t, axis, point


def _building_labels(box: Box, axis: np.ndarray, p: np.ndarray) -> np.ndarray:
    lab = np.full(axis.shape, box.label, np.uint8)
    if box.label != BUILDING or box.storeys < 1:
        return lab
    z = p[..., 2]
    k = np.floor((z - box.sill) / box.storey)
    in_row = (k >= 0) & (k < box.storeys) & (z - box.sill - k * box.storey < box.window_h)
    for face_axis, along, face_len in ((0, p[..., 1], box.depth), (1, p[..., 0], box.length)):
        on = axis == face_axis
        cols = box.window_columns(face_len)
        if not cols:
            continue
        rel = along - cols[0][0]
        i = np.floor(rel / box.spacing)
        in_col = (i >= 0) & (i < len(cols)) & (rel - i * box.spacing < box.window_w)
        lab[on & in_col & in_row] = WINDOW
        if face_axis == 1 and box.door:
            mid = cols[len(cols) // 2]
            front = on & (p[..., 1] < box.depth / 2)
            is_door = front & (along >= mid[0]) & (along < mid[1]) & (z < box.sill + box.window_h)
            lab[is_door] = DOOR
    return lab


def render(
    boxes: list[Box], shot: Shot, with_rgb: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Label mask (H x W uint8) and optionally an RGB image (H x W x 3 uint8) of the scene seen by ``shot``."""
    rays = shot_rays(shot)
    origin = np.array([shot.x, shot.y, shot.height_m])
    best = np.full(rays.shape[:2], np.inf)
    labels = np.full(rays.shape[:2], SKY, np.uint8)
    shade = np.ones(rays.shape[:2])
    owner = np.full(rays.shape[:2], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(rays[..., 2] < 0, -origin[2] / rays[..., 2], np.inf)
    ground = t_ground < best
    best = np.where(ground, t_ground, best)
    labels[ground] = PAVEMENT
    for index, box in enumerate(boxes):
        t, axis, point = _box_hit(box, origin, rays)
        closer = t < best
        best = np.where(closer, t, best)
        lab = _building_labels(box, axis, point)
        labels[closer] = lab[closer]
        owner[closer] = index
        shade[closer] = np.choose(axis, [0.8, 1.0, 1.1])[closer]
    rgb = _paint(boxes, labels, owner, shade, rays, origin, best, seed) if with_rgb else None
    return labels, rgb


def _paint(boxes, labels, owner, shade, rays, origin, dist, seed) -> np.ndarray:
    """Flat colours with shading, a sky gradient, grain and a little window reflection (for the example)."""
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    rgb = np.zeros((h, w, 3), float)
    sky = np.clip(rays[..., 2], 0, 1)[..., None]
    rgb[:] = (1 - sky) * np.array([200, 220, 240]) + sky * np.array([90, 140, 215])
    points = origin + np.where(np.isfinite(dist), dist, 0)[..., None] * rays
    checker = ((np.floor(points[..., 0] / 0.6) + np.floor(points[..., 1] / 0.6)) % 2)[..., None]
    ground = np.array([120, 118, 115]) + 8 * checker
    rgb = np.where((labels == PAVEMENT)[..., None], ground, rgb)
    for index, box in enumerate(boxes):
        mine = owner == index
        if box.label == BUILDING:
            colour = np.array(box.colour, float) * shade[..., None]
        elif box.label == CAR:
            colour = np.array([150, 30, 35], float) * shade[..., None]
        else:
            colour = np.array([60, 110, 50], float) * shade[..., None]
        rgb = np.where((mine & (labels != WINDOW) & (labels != DOOR))[..., None], colour, rgb)
    glass = np.array([55, 70, 90]) + 50 * np.clip(rays[..., 2:3] + 0.2, 0, 1)
    rgb = np.where((labels == WINDOW)[..., None], glass, rgb)
    rgb = np.where((labels == DOOR)[..., None], np.array([95, 60, 40]), rgb)
    rgb += rng.normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------- self-checks


def test_pinhole_centre_ray_points_along_heading_and_pitch():
    shot = Shot(0, 0, 1.6, heading_deg=90, width=100, height=80, hfov_deg=60, pitch_deg=10)
    d = shot_rays(shot)
    centre = (d[39, 49] + d[40, 50]) / 2
    assert centre[0] > 0.98 and abs(centre[1]) < 1e-6
    assert math.degrees(math.asin(centre[2] / np.linalg.norm(centre))) == pytest.approx(10, abs=0.5)


def test_positive_roll_dips_the_right_side():
    shot = Shot(0, 0, 1.6, heading_deg=0, width=101, height=81, hfov_deg=60, roll_deg=10)
    d = shot_rays(shot)
    assert d[40, 100, 2] < 0 < d[40, 0, 2]


def test_render_sees_a_box_wall_with_windows_and_sky_above():
    box = Box(-5, 10, 10, 8, 6, storeys=2)
    labels, rgb = render([box], Shot(0, 0, 1.6, 0, 160, 120, 70), with_rgb=True)
    column = labels[:, 80]
    assert column[0] == SKY and column[-1] == PAVEMENT
    assert {BUILDING, WINDOW} <= set(np.unique(labels)) and rgb.shape == (120, 160, 3)


def test_box_window_wall_ratio():
    box = Box(0, 0, 10.0, 8, 6, storeys=2, door=False)
    cols = box.window_columns(10.0)
    assert len(cols) == 3
    assert box.window_wall_ratio(10.0) == pytest.approx(3 * 2 * 1.2 * 1.4 / 60)
