"""Camera models (pinhole, equirectangular): rays through pixels and pixels of world directions.

Conventions. World directions are (east, north, up). Camera axes are x right, y down, z forward. Pixel
coordinates are continuous: pixel (col i, row j) covers [i, i+1) x [j, j+1), its centre is (i + 0.5, j + 0.5).
``heading_deg`` is clockwise from north, ``pitch_deg`` positive looking up, ``roll_deg`` positive when the
camera's right side dips (clockwise as seen from behind the camera); they are applied roll, then pitch, then
heading (intrinsic yaw-pitch-roll). For a panorama the heading is the direction of the image's centre column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["PROJECTIONS", "Camera", "focal_from_35mm", "hfov_to_focal"]

PROJECTIONS = ("pinhole", "equirectangular")
_DIAGONAL_35MM = math.hypot(36.0, 24.0)


def _rotation(heading_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Camera (x right, y down, z forward) -> world (east, north, up)."""
    h, p, r = (math.radians(v) for v in (heading_deg, pitch_deg, roll_deg))
    base = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    roll = np.array([[math.cos(r), 0.0, math.sin(r)], [0.0, 1.0, 0.0], [-math.sin(r), 0.0, math.cos(r)]])
    pitch = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]])
    yaw = np.array([[math.cos(h), math.sin(h), 0.0], [-math.sin(h), math.cos(h), 0.0], [0.0, 0.0, 1.0]])
    return yaw @ pitch @ roll @ base


@dataclass(frozen=True)
class Camera:
    """Intrinsics and orientation of one image (``focal_px`` only for pinhole images; principal point centred)."""

    width: int
    height: int
    projection: str = "pinhole"
    focal_px: float | None = None
    heading_deg: float = 0.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection {self.projection!r}: use one of {', '.join(PROJECTIONS)}")
        if self.projection == "pinhole" and not (self.focal_px and self.focal_px > 0):
            raise ValueError("a pinhole camera needs a positive focal_px")

    @property
    def hfov_deg(self) -> float:
        """Horizontal field of view (360 for a panorama)."""
        if self.projection == "equirectangular":
            return 360.0
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.focal_px)))

    @property
    def rotation(self) -> np.ndarray:
        """3 x 3 matrix taking camera-frame vectors to world (east, north, up) vectors."""
        return _rotation(self.heading_deg, self.pitch_deg, self.roll_deg)

    @property
    def angular_step(self) -> float:
        """Radians per pixel at the image centre."""
        if self.projection == "equirectangular":
            return 2.0 * math.pi / self.width
        return math.atan(1.0 / self.focal_px)

    def resized(self, width: int, height: int) -> Camera:
        """The same camera for the image resampled to ``width`` x ``height``."""
        focal = None if self.focal_px is None else self.focal_px * width / self.width
        return replace(self, width=int(width), height=int(height), focal_px=focal)

    def camera_rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Unit vectors in the camera frame (..., 3) through continuous pixel coordinates ``u``, ``v``."""
        u = np.asarray(u, dtype=float)
        v = np.asarray(v, dtype=float)
        if self.projection == "equirectangular":
            az = (u / self.width - 0.5) * 2.0 * math.pi
            el = (0.5 - v / self.height) * math.pi
            return np.stack([np.cos(el) * np.sin(az), -np.sin(el), np.cos(el) * np.cos(az)], axis=-1)
        x = (u - self.width / 2.0) / self.focal_px
        y = (v - self.height / 2.0) / self.focal_px
        d = np.stack([x, y, np.ones_like(x)], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def pixel_rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Unit world (east, north, up) vectors (..., 3) through pixel coordinates ``u``, ``v``."""
        return self.camera_rays(u, v) @ self.rotation.T

    def project(self, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel coordinates (u, v) of world directions (..., 3) and whether they fall inside the image."""
        d = np.asarray(directions, dtype=float) @ self.rotation  # world -> camera
        x, y, z = d[..., 0], d[..., 1], d[..., 2]
        if self.projection == "equirectangular":
            norm = np.linalg.norm(d, axis=-1)
            az = np.arctan2(x, z)
            el = np.arcsin(np.clip(-y / np.where(norm > 0, norm, 1.0), -1.0, 1.0))
            u = (az / (2.0 * math.pi) + 0.5) * self.width
            v = (0.5 - el / math.pi) * self.height
            u = np.mod(u, self.width)
            inside = (v >= 0) & (v < self.height)
            return u, v, inside
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.width / 2.0 + self.focal_px * x / z
            v = self.height / 2.0 + self.focal_px * y / z
        inside = (z > 0) & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return u, v, inside


def hfov_to_focal(hfov_deg: float, width: int) -> float:
    """Focal length in pixels of a pinhole image ``width`` pixels wide with horizontal field of view ``hfov_deg``."""
    return width / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))


def focal_from_35mm(focal_35mm: float, width: int, height: int) -> float:
    """Focal length in pixels from the 35 mm equivalent (defined on the diagonal, CIPA DC-008)."""
    return focal_35mm * math.hypot(width, height) / _DIAGONAL_35MM
