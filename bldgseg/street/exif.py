"""Photos as files: camera pose fields from EXIF GPS, focal lengths and XMP GPano tags; upright pixels."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bldgseg.errors import InputError
from bldgseg.street.cameras import focal_from_35mm
from bldgseg.street.poses import PoseFields

__all__ = ["exif_pose", "load_image"]

_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_ORIENTATION = 0x0112
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405
_FOCAL_PLANE_XRES = 0xA20E
_FOCAL_PLANE_UNIT = 0xA210
_PIXEL_X_DIMENSION = 0xA002
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit -> mm per unit


def _rational(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if math.isfinite(out) else None


def _dms(value: Any, ref: Any, negative: str) -> float | None:
    """EXIF degrees/minutes/seconds (three rationals) and N/S or E/W reference -> signed degrees."""
    try:
        parts = [float(v) for v in value]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not parts or len(parts) > 3 or not all(math.isfinite(p) for p in parts):
        return None
    parts += [0.0] * (3 - len(parts))
    deg = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    return -deg if str(ref or "").strip().upper().startswith(negative) else deg


_XMP_FIELDS = {
    "projection": r"ProjectionType",
    "heading_deg": r"PoseHeadingDegrees",
    "pitch_deg": r"PosePitchDegrees",
    "roll_deg": r"PoseRollDegrees",
}


def _xmp_text(image: Image.Image) -> str:
    raw = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
    return raw.decode("utf-8", "ignore") if isinstance(raw, bytes) else str(raw)


def _xmp_value(xmp: str, name: str) -> str | None:
    """A GPano property written as attribute (``GPano:X="v"``) or element (``<GPano:X>v</GPano:X>``)."""
    match = re.search(rf"""GPano:{name}\s*=\s*["']([^"']*)["']""", xmp) or re.search(
        rf"<GPano:{name}>([^<]*)</GPano:{name}>", xmp
    )
    return match.group(1).strip() if match else None


def exif_pose(path: Path) -> tuple[PoseFields, tuple[int, int]]:
    """Pose fields from a photo's EXIF GPS block, focal lengths and XMP GPano tags, and the photo's size.

    The size is that of the upright image (after applying the EXIF orientation). Raises ``InputError`` when
    the file cannot be read as an image.
    """
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            size = image.size
            xmp = _xmp_text(image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"{Path(path).name}: cannot be read as an image ({exc}); check the file") from exc
    if exif.get(_ORIENTATION) in (5, 6, 7, 8):
        size = (size[1], size[0])
    width, height = size
    pose = PoseFields(source="exif")
    gps = exif.get_ifd(_GPS_IFD)
    if gps:
        pose.lat = _dms(gps.get(2), gps.get(1), "S")
        pose.lon = _dms(gps.get(4), gps.get(3), "W")
        pose.heading_deg = _rational(gps.get(17))
        ref = gps.get(16)
        pose.heading_ref = (
            (ref.decode() if isinstance(ref, bytes) else str(ref)).strip().upper() if ref else None
        )
    exif_ifd = exif.get_ifd(_EXIF_IFD)
    f35 = _rational(exif_ifd.get(_FOCAL_35MM))
    f_mm = _rational(exif_ifd.get(_FOCAL_LENGTH))
    xres = _rational(exif_ifd.get(_FOCAL_PLANE_XRES))
    unit = _UNIT_MM.get(int(exif_ifd.get(_FOCAL_PLANE_UNIT, 2) or 2))
    if f35 and f35 > 0:
        pose.focal_px = focal_from_35mm(f35, width, height)
    elif f_mm and f_mm > 0 and xres and xres > 0 and unit:
        sensor_px = _rational(exif_ifd.get(_PIXEL_X_DIMENSION)) or max(width, height)
        pose.focal_px = f_mm * xres / unit * max(width, height) / sensor_px
    if xmp:
        for key, name in _XMP_FIELDS.items():
            value = _xmp_value(xmp, name)
            if value is None:
                continue
            if key == "projection":
                pose.projection = value.lower()
            else:
                number = _rational(value)
                if number is not None:
                    setattr(pose, key, number)
    return pose, (width, height)


def load_image(path: Path) -> np.ndarray:
    """The photo upright (EXIF orientation applied) as H x W x 3 uint8 RGB; ``InputError`` when unreadable."""
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{Path(path).name}: cannot be read as an image ({exc}); check the file") from exc
