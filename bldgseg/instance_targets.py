"""Instance training targets, Panoptic-DeepLab style: per-building ids from footprints, centres, offsets.

Targets (:func:`instance_targets`) come from an instance label image, one id per building, which
:func:`rasterize_instances` burns from the footprint polygons (each polygon one instance), so the existing
footprint datasets train the instance head with no extra labelling; :func:`connected_instances` is the
fallback for mask-only datasets (touching buildings then stay merged).

**Centre of a building**: the centre of mass of its pixels, rounded to the nearest pixel (``floor(c + 0.5)``,
so the same building gets the same centre wherever it lies in a crop). When that pixel is not part of the
building (concave shapes: L, U, courtyards), the building's pixel nearest to the centre of mass is used, so a
centre always lies on its own building and cannot fall on a neighbour. Rounding to a pixel makes the heatmap
peak exactly 1 at one pixel (no ties for the peak detection) and makes ``pixel + offset`` land exactly on
the peak for perfect predictions.

**Heatmap**: ``exp(-d^2 / (2 sigma^2))`` with ``d`` the distance to the nearest centre (equal to the maximum
over the instances' Gaussians). **Offsets**: ``(centre_row - row, centre_col - col)`` in pixels for the pixels
of each building, 0 elsewhere; they are translation invariant, so overlapping crops and tiles agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import rasterio.features
from affine import Affine
from scipy import ndimage

from bldgseg.palettes import IGNORE_INDEX

__all__ = [
    "TARGET_CHANNELS",
    "connected_instances",
    "contact_pixels",
    "gap_between_buildings",
    "instance_centres",
    "instance_target_stack",
    "instance_targets",
    "rasterize_instances",
]

#: Channel order of :func:`instance_target_stack` (the target tensor of an instance training sample).
TARGET_CHANNELS: tuple[str, ...] = (
    "semantic",
    "center",
    "offset_y",
    "offset_x",
    "center_weight",
    "offset_weight",
)

_EIGHT = np.ones((3, 3), dtype=bool)


def rasterize_instances(
    polygons: Iterable[Any], transform: Affine, shape: tuple[int, int], all_touched: bool = False
) -> np.ndarray:
    """Instance label image (int32, ``shape``): polygon ``i`` (0-based, input order) burns id ``i + 1``.

    ``polygons`` are shapely geometries (or a GeoSeries / GeoDataFrame) in the raster's CRS; empty or missing
    geometries burn nothing. Every pixel gets one id, so buildings sharing an edge split its pixels exactly
    (a pixel belongs to the polygon containing its centre; GDAL's half-open rule decides centres lying on the
    shared edge). Where footprints overlap, the smaller one is burned last and keeps the overlap, so a small
    building is never erased by a larger one drawn around it.
    """
    geoms = list(getattr(polygons, "geometry", polygons))
    shapes = [(g, i + 1) for i, g in enumerate(geoms) if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, np.int32)
    shapes.sort(key=lambda item: -item[0].area)
    return rasterio.features.rasterize(
        shapes, out_shape=shape, transform=transform, fill=0, all_touched=all_touched, dtype="int32"
    )


def contact_pixels(instances: np.ndarray, gap_px: int = 1) -> np.ndarray:
    """Building pixels with a *different* building within ``gap_px`` pixels (bool, the shape of ``instances``).

    ``instances``: one positive id per building, 0 elsewhere. A (2 * gap_px + 1)-square neighbourhood holding a
    larger id (maximum filter) or a smaller positive id (minimum filter with background as +inf) marks a contact.
    """
    ids = np.asarray(instances)
    size = 2 * int(gap_px) + 1
    inside = ids > 0
    larger = ndimage.maximum_filter(ids, size=size, mode="nearest") > ids
    positive = np.where(inside, ids, np.iinfo(np.int32).max).astype(np.int32)
    smaller = ndimage.minimum_filter(positive, size=size, mode="nearest") < ids
    return inside & (larger | smaller)


def gap_between_buildings(mask: np.ndarray, instances: np.ndarray | None, gap_px: int) -> np.ndarray:
    """``mask`` with the pixels where two buildings touch set to background (0): a ~``2 * gap_px`` px gap.

    A semantic model trained on such targets leaves a thin background line between touching roofs, so its
    connected components come out one per building (the "touching borders" trick of the SpaceNet building
    challenges). Ignored pixels (255) stay ignored; without ``instances`` or with ``gap_px`` 0 the mask is
    returned unchanged.
    """
    if instances is None or gap_px <= 0:
        return mask
    out = np.array(mask, copy=True)
    out[contact_pixels(instances, gap_px) & (out == 1)] = 0
    return out


def connected_instances(mask: np.ndarray) -> np.ndarray:
    """Instances of a 0/1(/255) mask without footprints: 8-connected components of the value 1 (int32)."""
    labels, _ = ndimage.label(np.asarray(mask) == 1, structure=_EIGHT)
    return labels.astype(np.int32)


def instance_centres(instance_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, centres (n, 2) int64 row/col) of the positive labels; the centre rule is in the module docstring."""
    labels = np.asarray(instance_labels)
    fg = labels > 0
    rows, cols = np.nonzero(fg)
    ids, inverse = np.unique(labels[rows, cols], return_inverse=True)
    if len(ids) == 0:
        return ids.astype(np.int64), np.zeros((0, 2), np.int64)
    count = np.bincount(inverse).astype(np.float64)
    mean_r = np.bincount(inverse, weights=rows) / count
    mean_c = np.bincount(inverse, weights=cols) / count
    centres = np.stack([np.floor(mean_r + 0.5), np.floor(mean_c + 0.5)], axis=1).astype(np.int64)
    outside = np.flatnonzero(labels[centres[:, 0], centres[:, 1]] != ids)
    if len(outside):
        order = np.argsort(inverse, kind="stable")  # pixels grouped by instance, raster order inside
        starts = np.concatenate([[0], np.cumsum(count.astype(np.int64))])
        for k in outside:
            pix = order[starts[k] : starts[k + 1]]
            d2 = (rows[pix] - mean_r[k]) ** 2 + (cols[pix] - mean_c[k]) ** 2
            j = pix[int(np.argmin(d2))]
            centres[k] = (rows[j], cols[j])
    return ids.astype(np.int64), centres


def instance_targets(
    instance_labels: np.ndarray, sigma: float = 8.0, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre heatmap (H, W), offsets (2, H, W: dy, dx in pixels) and loss weights (2, H, W), all float32.

    ``instance_labels``: one positive id per building, 0 background (e.g. from :func:`rasterize_instances`).
    ``weights[0]`` weighs the heatmap loss (1 everywhere but ``ignore``), ``weights[1]`` the offset loss (1 on
    building pixels not in ``ignore``). ``sigma`` is the Gaussian's standard deviation in pixels.
    """
    labels = np.asarray(instance_labels)
    if labels.ndim != 2:
        raise ValueError(f"instance labels must be 2-D, got shape {labels.shape}")
    h, w = labels.shape
    ids, centres = instance_centres(labels)
    center = np.zeros((h, w), np.float32)
    offsets = np.zeros((2, h, w), np.float32)
    weights = np.ones((2, h, w), np.float32)
    fg = labels > 0
    weights[1] = fg
    if len(ids):
        seeds = np.ones((h, w), bool)
        seeds[centres[:, 0], centres[:, 1]] = False
        dist = ndimage.distance_transform_edt(seeds)
        center = np.exp(-(dist**2) / (2.0 * sigma**2)).astype(np.float32)
        rows, cols = np.nonzero(fg)
        k = np.searchsorted(ids, labels[rows, cols])
        offsets[0, rows, cols] = centres[k, 0] - rows
        offsets[1, rows, cols] = centres[k, 1] - cols
    if ignore is not None:
        weights[:, np.asarray(ignore, bool)] = 0.0
    return center, offsets, weights


def instance_target_stack(mask: np.ndarray, instance_labels: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    """Training target (6, H, W) float32 in the order of :data:`TARGET_CHANNELS`.

    ``mask`` (H, W) uint8 0/1/255 gives the semantic channel (255 kept, for the ignore-aware semantic loss)
    and the ignored pixels of the other losses; building pixels without an instance id are left out of the
    offset loss.
    """
    mask = np.asarray(mask)
    labels = np.where(mask == 1, np.asarray(instance_labels), 0)
    center, offsets, weights = instance_targets(labels, sigma, ignore=mask == IGNORE_INDEX)
    return np.concatenate([mask[None].astype(np.float32), center[None], offsets, weights]).astype(np.float32)
