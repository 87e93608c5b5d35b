"""Grey-level co-occurrence (GLCM) texture of the pixels inside a footprint or a facade."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window
from skimage.feature import graycomatrix, graycoprops

from bldgseg.io import valid_pixels

__all__ = ["GLCM_LEVELS", "LUMA", "TEXTURE_PROPERTIES", "glcm_texture", "grey_range"]

#: Grey levels the image is quantized to before the GLCM is built.
GLCM_LEVELS = 32
#: Rec.601 luma weights of R, G, B.
LUMA = np.array([0.299, 0.587, 0.114])
#: GLCM properties returned by :func:`glcm_texture`, each as ``texture_<name>``.
TEXTURE_PROPERTIES = ("contrast", "homogeneity", "energy", "correlation", "entropy")
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def glcm_texture(grey: np.ndarray, inside: np.ndarray, lo: float, hi: float) -> dict[str, float]:
    """GLCM properties of the grey pixels inside the footprint (pixels outside never form a pair).

    ``grey`` is quantized to :data:`GLCM_LEVELS` over ``lo``..``hi``; the symmetric GLCM at distance 1 over
    0/45/90/135 degrees gives ``texture_<property>`` averaged over the angles (entropy in bits). An empty
    dict when no pair of inside pixels exists.
    """
    q = np.floor((grey - lo) / (hi - lo) * GLCM_LEVELS)
    q = np.clip(np.nan_to_num(q, nan=0.0), 0, GLCM_LEVELS - 1).astype(np.uint8)
    q[~inside] = GLCM_LEVELS
    glcm = graycomatrix(q, [1], _GLCM_ANGLES, levels=GLCM_LEVELS + 1, symmetric=True, normed=False)
    p = glcm[:GLCM_LEVELS, :GLCM_LEVELS].astype(np.float64)
    sums = p.sum(axis=(0, 1))  # (1, n_angles)
    keep = sums[0] > 0
    if not keep.any():
        return {}
    p = p[:, :, :, keep] / sums[:, keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=(0, 1))
    return {
        "texture_contrast": float(graycoprops(p, "contrast").mean()),
        "texture_homogeneity": float(graycoprops(p, "homogeneity").mean()),
        "texture_energy": float(graycoprops(p, "energy").mean()),
        "texture_correlation": float(graycoprops(p, "correlation").mean()),
        "texture_entropy": float(ent.mean()),
    }


def grey_range(ds: Any, bands: Sequence[int]) -> tuple[float, float]:
    """Value range mapped onto the GLCM levels: 0-256 for 8-bit, else the raster's 0.5-99.5 % luma range.

    The range comes from a decimated read when the raster is small or has overviews, else from a grid of
    8 x 8 windows of 128 pixels, so it costs little on large rasters and is the same for every footprint.
    """
    if all(ds.dtypes[b - 1] == "uint8" for b in bands):
        return 0.0, 256.0
    greys = []
    for data, masks in _luma_samples(ds, bands):
        data = data.astype(np.float64)
        greys.append(np.tensordot(LUMA, data[:, valid_pixels(masks, data)], axes=1))
    grey = np.concatenate(greys)
    if grey.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(grey, [0.5, 99.5])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _luma_samples(ds: Any, bands: Sequence[int], side: int = 1024) -> list[tuple[np.ndarray, np.ndarray]]:
    """(data, masks) reads that sample the raster: one decimated read, or 8 x 8 windows of 128 pixels."""
    if max(ds.width, ds.height) <= 4 * side or ds.overviews(bands[0]):
        f = max(1.0, max(ds.width, ds.height) / side)
        shape = (len(bands), max(1, int(ds.height / f)), max(1, int(ds.width / f)))
        data = ds.read(list(bands), out_shape=shape, resampling=Resampling.nearest)
        masks = ds.read_masks(list(bands), out_shape=shape, resampling=Resampling.nearest)
        return [(data, masks)]
    samples = []
    h, w = min(128, ds.height), min(128, ds.width)
    for r in np.linspace(0, ds.height - h, 8).astype(int):
        for c in np.linspace(0, ds.width - w, 8).astype(int):
            win = Window(int(c), int(r), w, h)
            samples.append((ds.read(list(bands), window=win), ds.read_masks(list(bands), window=win)))
    return samples
