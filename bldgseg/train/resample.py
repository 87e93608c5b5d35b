"""Training imagery and masks at the target ground sample distance: GSD checks, scale factors, resizing."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from affine import Affine
from rasterio.warp import transform_bounds

from bldgseg.errors import InputError
from bldgseg.palettes import IGNORE_INDEX

__all__ = ["GSD_TOLERANCE", "bounds_4326", "check_gsd", "resize_binary_mask", "resize_image", "scale_factor"]

#: Relative GSD difference below which imagery is not resampled.
GSD_TOLERANCE = 0.02


def check_gsd(value: float | None, what: str) -> float | None:
    """``value`` as a positive float (None stays None); ``InputError`` naming ``what`` otherwise."""
    if value is None:
        return None
    try:
        gsd = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: {value!r} is not a number; give metres per pixel, e.g. 0.3") from exc
    if not math.isfinite(gsd) or gsd <= 0:
        raise InputError(f"{what}: {value!r} must be a positive number of metres per pixel, e.g. 0.3")
    return gsd


def scale_factor(source_gsd: float, target_gsd: float | None) -> float:
    """Output pixels per source pixel (>1 enlarges); exactly 1 within :data:`GSD_TOLERANCE`."""
    if target_gsd is None:
        return 1.0
    factor = source_gsd / target_gsd
    return 1.0 if abs(factor - 1.0) < GSD_TOLERANCE else factor


def bounds_4326(crs: Any, transform: Affine, height: int, width: int) -> tuple[float, float, float, float]:
    """Bounds (minx, miny, maxx, maxy) in EPSG:4326 of a ``height`` x ``width`` grid at ``transform``."""
    xs, ys = zip(
        *(transform * (c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))), strict=True
    )
    b = transform_bounds(crs, "EPSG:4326", min(xs), min(ys), max(xs), max(ys), densify_pts=21)
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def resize_image(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) image to ``out_hw``: area-averaging when shrinking, bilinear when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == tuple(out_hw):
        return image
    interp = cv2.INTER_AREA if out_hw[0] * out_hw[1] < h * w else cv2.INTER_LINEAR
    return cv2.resize(image, (out_hw[1], out_hw[0]), interpolation=interp)


def resize_binary_mask(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize a 0/1/255 mask: building and ignore fractions are averaged, then each rounded at 0.5."""
    h, w = mask.shape
    if (h, w) == tuple(out_hw):
        return mask
    interp = cv2.INTER_AREA if out_hw[0] * out_hw[1] < h * w else cv2.INTER_LINEAR
    size = (out_hw[1], out_hw[0])
    fg = cv2.resize((mask == 1).astype(np.float32), size, interpolation=interp)
    ignore = cv2.resize((mask == IGNORE_INDEX).astype(np.float32), size, interpolation=interp)
    out = (fg >= 0.5).astype(np.uint8)
    out[ignore >= 0.5] = IGNORE_INDEX
    return out
