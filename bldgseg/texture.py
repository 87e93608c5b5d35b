"""Grey-level co-occurrence (GLCM) texture of the pixels inside a footprint or a facade."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window
from skimage.feature import graycomatrix, graycoprops

from bldgseg.io import valid_pixels

__all__ = [
    "GLCM_LEVELS",
    "LUMA",
    "TEXTURE_PROPERTIES",
    "glcm_texture",
    "grey_range",
    "label_glcm_texture",
    "luma",
    "quantize_grey",
]

#: Grey levels the image is quantized to before the GLCM is built.
GLCM_LEVELS = 32
#: Rec.601 luma weights of R, G, B.
LUMA = np.array([0.299, 0.587, 0.114])
#: GLCM properties returned by :func:`glcm_texture`, each as ``texture_<name>``.
TEXTURE_PROPERTIES = ("contrast", "homogeneity", "energy", "correlation", "entropy")
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
#: The row and column step of each angle at distance 1, as ``graycomatrix`` takes them.
_GLCM_STEPS = ((0, 1), (1, 1), (1, 0), (1, -1))


def luma(data: np.ndarray) -> np.ndarray:
    """Rec.601 luma (float64) of ``data`` (3 x ...: R, G, B), computed pixel by pixel in a fixed order.

    Not a BLAS product: the rounding of a dot product depends on the array's shape there, and a luma that
    lands within a rounding error of a GLCM level boundary would then quantize differently depending on how
    much of the raster was read with it."""
    r, g, b = (np.asarray(band, dtype=np.float64) for band in data)
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def quantize_grey(grey: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``grey`` quantized to :data:`GLCM_LEVELS` levels over ``lo``..``hi`` (uint8; NaN as level 0)."""
    q = np.floor((grey - lo) / (hi - lo) * GLCM_LEVELS)
    return np.clip(np.nan_to_num(q, nan=0.0), 0, GLCM_LEVELS - 1).astype(np.uint8)


def glcm_texture(grey: np.ndarray, inside: np.ndarray, lo: float, hi: float) -> dict[str, float]:
    """GLCM properties of the grey pixels inside the footprint (pixels outside never form a pair).

    ``grey`` is quantized to :data:`GLCM_LEVELS` over ``lo``..``hi``; the symmetric GLCM at distance 1 over
    0/45/90/135 degrees gives ``texture_<property>`` averaged over the angles (entropy in bits). An empty
    dict when no pair of inside pixels exists.
    """
    q = quantize_grey(grey, lo, hi)
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


def label_glcm_texture(q: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """:func:`glcm_texture` of every label at once: ``(count, 5)`` in :data:`TEXTURE_PROPERTIES` order.

    ``q``: quantized grey (:func:`quantize_grey`); ``labels``: 0 outside, 1..``count`` the pixels of each region
    (only pairs of pixels of one label count). Rows of labels without a pair of pixels are NaN. The same
    numbers as :func:`glcm_texture` per region, to rounding: one GLCM per label and angle from a bincount.
    """
    levels = GLCM_LEVELS
    total = np.zeros((count, len(TEXTURE_PROPERTIES)))
    angles = np.zeros(count)
    for dr, dc in _GLCM_STEPS:
        a, b = _shifted_pairs(labels, dr, dc)
        qa, qb = _shifted_pairs(q, dr, dc)
        pair = (a == b) & (a > 0)
        index = (a[pair].astype(np.int64) - 1) * levels * levels
        index += qa[pair].astype(np.int64) * levels + qb[pair]
        glcm = np.bincount(index, minlength=count * levels * levels).reshape(count, levels, levels)
        glcm = (glcm + glcm.transpose(0, 2, 1)).astype(np.float64)
        sums = glcm.sum(axis=(1, 2))
        keep = sums > 0
        total[keep] += _glcm_properties(glcm[keep] / sums[keep, None, None])
        angles += keep
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(angles[:, None] > 0, total / angles[:, None], np.nan)


def _shifted_pairs(array: np.ndarray, dr: int, dc: int) -> tuple[np.ndarray, np.ndarray]:
    """Views of ``array`` at ``(r, c)`` and at ``(r + dr, c + dc)`` over every pair inside the array."""
    height, width = array.shape
    c_lo, c_hi = max(0, -dc), width - max(0, dc)
    return array[: height - dr, c_lo:c_hi], array[dr:, c_lo + dc : c_hi + dc]


def _glcm_properties(p: np.ndarray) -> np.ndarray:
    """Contrast, homogeneity, energy, correlation, entropy (bits) of normalised GLCMs ``(n, L, L)``, as
    ``skimage.feature.graycoprops`` (and the entropy of :func:`glcm_texture`) compute them."""
    i = np.arange(p.shape[1], dtype=np.float64)[None, :, None]
    j = np.arange(p.shape[2], dtype=np.float64)[None, None, :]
    contrast = np.sum(p * (i - j) ** 2, axis=(1, 2))
    homogeneity = np.sum(p / (1.0 + (i - j) ** 2), axis=(1, 2))
    energy = np.sqrt(np.sum(p**2, axis=(1, 2)))
    diff_i = i - np.sum(i * p, axis=(1, 2))[:, None, None]
    diff_j = j - np.sum(j * p, axis=(1, 2))[:, None, None]
    std_i = np.sqrt(np.sum(p * diff_i**2, axis=(1, 2)))
    std_j = np.sqrt(np.sum(p * diff_j**2, axis=(1, 2)))
    cov = np.sum(p * diff_i * diff_j, axis=(1, 2))
    flat = (std_i < 1e-15) | (std_j < 1e-15)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.where(flat, 1.0, cov / (std_i * std_j))
        entropy = -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=(1, 2))
    return np.stack([contrast, homogeneity, energy, correlation, entropy], axis=1)


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
