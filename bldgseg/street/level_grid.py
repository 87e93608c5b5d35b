"""A photo's labels and colours resampled onto a level azimuth x elevation grid (one vertical plane per column)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bldgseg.street.cameras import Camera

__all__ = ["OUTSIDE", "LevelGrid", "level_grid"]

#: Label of grid cells outside the photo.
OUTSIDE = 255


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
