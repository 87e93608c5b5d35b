"""Footprints burnt into label images a block of the raster at a time, for per-building pixel statistics.

One read and one rasterization per block replace one of each per footprint. The pixels of a footprint are
those whose centre lies inside it (GDAL's rule, as ``geometry_mask`` per footprint gives them), computed in the
raster's own pixel coordinates so that they do not depend on the block a footprint is burned in. Footprints
whose interiors overlap go into separate layers, so each keeps all of its pixels; a footprint that covers no
pixel centre is left to the caller (``LabelBlock.missing``), which takes the pixels it touches instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

__all__ = ["BLOCK_PIXELS", "LabelBlock", "footprint_pixel_bounds", "iter_label_blocks"]

#: Blocks group footprints by the block of this many pixels their bounding box starts in.
BLOCK_PIXELS = 2048

IDENTITY = Affine.identity()


@dataclass
class LabelBlock:
    """A window of the raster and its footprints as label images.

    ``layers``: ``(labels, positions)`` pairs, ``labels`` int32 of the window's shape (0: no footprint,
    *k*: the footprint ``positions[k - 1]``). ``missing``: positions of footprints with no pixel centre inside.
    """

    window: Window
    layers: list[tuple[np.ndarray, np.ndarray]]
    missing: list[int]


def footprint_pixel_bounds(transform: Any, width: int, height: int, geoms: np.ndarray) -> np.ndarray:
    """``(n, 4)`` int rows ``r0, c0, r1, c1``: each footprint's bounding box in pixels, rounded outwards and
    clipped to the raster (empty where ``r1 <= r0`` or ``c1 <= c0``); also right for rotated transforms."""
    bounds = shapely.bounds(geoms)  # NaN for empty / missing geometries
    inv = ~transform
    xs = bounds[:, [0, 2, 0, 2]]
    ys = bounds[:, [1, 1, 3, 3]]
    cols = inv.a * xs + inv.b * ys + inv.c
    rows = inv.d * xs + inv.e * ys + inv.f
    with np.errstate(invalid="ignore"):
        out = np.stack(
            [
                np.clip(np.floor(rows.min(axis=1)), 0, height),
                np.clip(np.floor(cols.min(axis=1)), 0, width),
                np.clip(np.ceil(rows.max(axis=1)), 0, height),
                np.clip(np.ceil(cols.max(axis=1)), 0, width),
            ],
            axis=1,
        )
    out[~np.isfinite(out).all(axis=1)] = 0
    return out.astype(np.int64)


def iter_label_blocks(ds: Any, geoms: np.ndarray, block: int = BLOCK_PIXELS) -> Iterator[LabelBlock]:
    """Label blocks of the footprints ``geoms`` (in ``ds``'s CRS) that fall on the raster ``ds``."""
    bounds = footprint_pixel_bounds(ds.transform, ds.width, ds.height, geoms)
    usable = (bounds[:, 2] > bounds[:, 0]) & (bounds[:, 3] > bounds[:, 1])
    usable &= ~(shapely.is_empty(geoms) | shapely.is_missing(geoms))
    positions = np.flatnonzero(usable)
    keys = (bounds[positions, 0] // block) * (math.ceil(ds.width / block) + 1) + bounds[positions, 1] // block
    order = np.argsort(keys, kind="stable")
    positions, keys = positions[order], keys[order]
    pixel_geoms = np.empty(len(geoms), dtype=object)
    pixel_geoms[positions] = _to_pixels(geoms[positions], ds.transform)
    for group in np.split(positions, np.flatnonzero(np.diff(keys)) + 1):
        if len(group):
            yield _label_block(pixel_geoms, bounds, group)


def _to_pixels(geoms: np.ndarray, transform: Any) -> np.ndarray:
    """Footprints in the raster's (fractional) pixel coordinates, x = column, y = row.

    Computed once for all footprints: a block shifts them by whole pixels, which is exact in floating point,
    so a footprint gets the same pixels whatever block it is burned in (with a block transform, the rounding
    of the block's origin could move a pixel centre lying on an edge from one side to the other)."""
    inv = ~transform
    matrix = np.array([[inv.a, inv.d], [inv.b, inv.e]])
    return shapely.transform(geoms, lambda xy: xy @ matrix + (inv.c, inv.f))


def _label_block(pixel_geoms: np.ndarray, bounds: np.ndarray, group: np.ndarray) -> LabelBlock:
    r0, c0 = bounds[group, 0].min(), bounds[group, 1].min()
    r1, c1 = bounds[group, 2].max(), bounds[group, 3].max()
    window = Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))
    shape = (int(r1 - r0), int(c1 - c0))
    shift = np.array([float(c0), float(r0)])
    local = shapely.transform(pixel_geoms[group], lambda xy: xy - shift)
    layers, missing = [], []
    for layer in _overlap_layers(local):
        members = group[layer]
        labels = rasterize(
            ((local[i], k + 1) for k, i in enumerate(layer)),
            out_shape=shape,
            transform=IDENTITY,
            fill=0,
            dtype="int32",
        )
        counts = np.bincount(labels.ravel(), minlength=len(members) + 1)[1:]
        missing.extend(int(pos) for pos in members[counts == 0])
        layers.append((labels, members))
    return LabelBlock(window, layers, missing)


def _overlap_layers(geoms: np.ndarray) -> list[np.ndarray]:
    """Indices of ``geoms`` split into layers in which no two interiors overlap (greedy colouring)."""
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    if len(left):
        interiors = shapely.relate_pattern(geoms[left], geoms[right], "T********")
        left, right = left[interiors], right[interiors]
    if not len(left):
        return [np.arange(len(geoms))]
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    colour = np.zeros(len(geoms), dtype=np.int64)
    for i in sorted(neighbours):
        taken = {int(colour[j]) for j in neighbours[i] if j < i}
        colour[i] = next(c for c in range(len(taken) + 1) if c not in taken)
    return [np.flatnonzero(colour == c) for c in range(int(colour.max()) + 1)]
