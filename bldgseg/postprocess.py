"""Post-processing of a chunk's building polygons in metric units: spurs cut, fragments merged or removed, holes
filled, outlines simplified or regularized.

``bldgseg run`` applies :func:`postprocess_chunk` on the worker, after vectorizing and before a chunk keeps the
buildings it owns. Steps, in order:

1. **Opening** (``opening_m``): parts of a building narrower than ``opening_m`` (thin spurs, a neck joining two
   roofs) are cut off, as a morphological opening (erosion then dilation, mitred so right-angled corners stay
   sharp) with a square of that side, rounded to half a pixel. Touching instances are opened together, so their
   shared walls are never cut. In ``bldgseg run`` a semantic model's mask is opened on the raster instead
   (:func:`open_mask`: the same shapes, several times faster), and the opened mask is what gets vectorized; a
   building's ``confidence`` is then the mean probability of its opened pixels.
   **Touching buildings split** (``split_core``, semantic models): the opened mask is cut by a marker watershed
   on the probability (:func:`split_touching`): in a connected part of the mask with two or more cores
   (connected pixels of probability >= ``split_core``) each core is a building, and every pixel of the part
   joins the core it reaches over descending probability, so a dip in the probability between two roofs becomes
   their shared wall. The pieces of split parts are handled as instances (merged and simplified together;
   shared walls stay shared); the other parts, which touch none of them, as before.
2. **Fragments merged** (``merge_fragments``): a polygon smaller than ``min_area_m2`` that shares an edge with a
   larger one joins the neighbour it shares the longest edge with (a stray piece of an instance, a spur cut
   from a building that still touches it).
3. **Fragments removed**: polygons smaller than ``min_area_m2`` are dropped.
4. **Holes filled** (``hole_area_m2``): holes smaller than that are filled, unless another building lies in them.
5. **Outlines**: simplified by ``simplify_m`` (instances together, so shared edges stay shared) or, with
   ``regularize``, squared off (:mod:`bldgseg.regularize`); touching instances are regularized as a group and
   cleaned into an exact coverage (no gap, no overlap, identical shared walls).

Steps 1-4 work in the raster's *pixel frame*: its pixel grid (of the whole raster, not the chunk) scaled to equal
ground length on both axes. Pixel outlines have whole-number coordinates there, so cutting and merging are exact
and every chunk computes the same result for the same building. Areas are measured in each polygon's UTM zone.
Polygons no step changes keep their coordinates, so with steps 1, 2 and 4 off the output is what vectorizing
with a minimum area gave before these steps existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from scipy import ndimage
from shapely.geometry import Polygon
from skimage.segmentation import watershed

from bldgseg.coverage import regularize_coverage
from bldgseg.defaults import DEFAULT_MIN_AREA_M2
from bldgseg.errors import ModelError
from bldgseg.geo_metric import GEOD, WGS84
from bldgseg.io import RasterInfo
from bldgseg.vectorize import metric_areas, refine_outlines, simplify_coverage

if TYPE_CHECKING:
    from bldgseg.models import ModelCard

__all__ = [
    "CARD_KEYS",
    "PixelFrame",
    "PostprocessSettings",
    "card_postprocess",
    "clean_polygons",
    "open_mask",
    "postprocess_chunk",
    "raster_opening_side",
    "resolve_postprocess",
    "split_touching",
]

#: Keys of a model card's ``postprocess`` object and their types.
CARD_KEYS: dict[str, type] = {
    "hole_area_m2": float,
    "opening_m": float,
    "merge_fragments": bool,
    "split_core": float,
    "regularize": bool,
}
_EIGHT = np.ones((3, 3), dtype=bool)
#: Pixel-frame coordinates are rounded to this step (pixels), so pixel outlines are exactly whole numbers.
_GRID = 1.0 / 1024.0


@dataclass(frozen=True)
class PostprocessSettings:
    """What :func:`postprocess_chunk` does (see the module docstring); the defaults are a card without any."""

    min_area_m2: float = DEFAULT_MIN_AREA_M2
    hole_area_m2: float = 0.0
    opening_m: float = 0.0
    merge_fragments: bool = False
    split_core: float = 0.0
    regularize: bool = False
    simplify_m: float = 0.2

    @property
    def reshapes(self) -> bool:
        """Whether a step other than removing fragments and shaping outlines is on."""
        merging = self.merge_fragments and self.min_area_m2 > 0
        return self.opening_m > 0 or self.hole_area_m2 > 0 or merging


#: Every step off (``--no-postprocess``): nothing removed, filled, cut, merged or squared off.
OFF = PostprocessSettings(min_area_m2=0.0)


def card_postprocess(card: ModelCard) -> PostprocessSettings:
    """The post-processing a model card asks for (``min_area_m2`` and ``postprocess``; absent: the defaults)."""
    values = dict(card.postprocess or {})
    unknown = sorted(set(values) - set(CARD_KEYS))
    if unknown:
        raise ModelError(
            f"{card.name}: unknown post-processing key(s) {', '.join(unknown)} in the model card; "
            f"use {', '.join(CARD_KEYS)}"
        )
    typed = {key: CARD_KEYS[key](value) for key, value in values.items()}
    min_area = DEFAULT_MIN_AREA_M2 if card.min_area_m2 is None else float(card.min_area_m2)
    return PostprocessSettings(min_area_m2=min_area, **typed)


def resolve_postprocess(
    card: ModelCard, enabled: bool = True, simplify_m: float = 0.2, **given: float | bool | None
) -> PostprocessSettings:
    """The settings of a run: each of ``given`` (``min_area_m2``, ``hole_area_m2``, ``opening_m``,
    ``merge_fragments``, ``split_core``, ``regularize``) as given, else the card's when ``enabled``, else off."""
    unknown = sorted(set(given) - {"min_area_m2", *CARD_KEYS})
    if unknown:
        raise TypeError(f"resolve_postprocess: unknown setting(s) {', '.join(unknown)}")
    base = card_postprocess(card) if enabled else OFF
    chosen = {key: value for key, value in given.items() if value is not None}
    return replace(base, simplify_m=float(simplify_m), **chosen)


# -------------------- the pixel frame


def _affine_coords(transform: Affine, coords: np.ndarray) -> np.ndarray:
    a, b, c, d, e, f = transform[:6]
    x, y = coords[:, 0], coords[:, 1]
    return np.column_stack([a * x + b * y + c, d * x + e * y + f])


@dataclass(frozen=True)
class PixelFrame:
    """A raster's pixel grid scaled to equal ground length on both axes (see the module docstring)."""

    #: From the raster's CRS to the frame.
    to_frame: Affine
    #: Ground metres per frame unit (one pixel along the rows).
    unit_m: float

    @classmethod
    def of(cls, info: RasterInfo) -> PixelFrame:
        """The frame of a raster: pixel columns scaled by the ratio of a column step to a row step on the ground."""
        t = info.transform
        col_m, row_m = _pixel_steps_m(info)
        ratio = col_m / row_m if row_m > 0 else 1.0
        if abs(ratio - 1.0) < 1e-9 or not math.isfinite(ratio):
            ratio = 1.0
        return cls(Affine.scale(ratio, 1.0) * ~t, row_m if row_m > 0 else info.gsd_m)

    def forward(self, geoms: np.ndarray) -> np.ndarray:
        """Geometries from the CRS into the frame, coordinates rounded to 1/1024 pixel."""
        return shapely.transform(
            geoms, lambda xy: np.round(_affine_coords(self.to_frame, xy) / _GRID) * _GRID
        )

    def back(self, geoms: np.ndarray) -> np.ndarray:
        """Geometries from the frame into the CRS."""
        inverse = ~self.to_frame
        return shapely.transform(geoms, lambda xy: _affine_coords(inverse, xy))


def _pixel_steps_m(info: RasterInfo) -> tuple[float, float]:
    """Ground length (m) of one column step and one row step at the raster's centre."""
    t = info.transform
    col_len, row_len = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    crs = CRS.from_user_input(info.crs)
    if not crs.is_geographic:  # conformal map projections: the same scale factor on both axes
        k = info.gsd_m / ((col_len + row_len) / 2)
        return col_len * k, row_len * k
    to_lonlat = Transformer.from_crs(crs, WGS84, always_xy=True)
    cx, cy = t * (info.width / 2, info.height / 2)
    lon, lat = to_lonlat.transform(cx, cy)
    lengths = []
    for dx, dy in ((t.a, t.d), (t.b, t.e)):
        lon2, lat2 = to_lonlat.transform(cx + dx, cy + dy)
        lengths.append(float(GEOD.inv(lon, lat, lon2, lat2)[2]))
    return lengths[0], lengths[1]


# -------------------- pieces: polygons being reshaped in the frame


@dataclass
class _Pieces:
    """Polygons in the pixel frame with the input row each comes from; ``changed`` False: the input itself."""

    geoms: np.ndarray
    parent: np.ndarray
    confidence: np.ndarray
    changed: np.ndarray
    #: Per input row: m² per squared frame unit, and its area in m² (UTM).
    factor: np.ndarray
    input_area_m2: np.ndarray

    def take(self, index: np.ndarray) -> _Pieces:
        return replace(
            self,
            geoms=self.geoms[index],
            parent=self.parent[index],
            confidence=self.confidence[index],
            changed=self.changed[index],
        )

    def area_m2(self) -> np.ndarray:
        """Ground area of each piece: the input's own for unchanged pieces, else scaled from the frame."""
        scaled = shapely.area(self.geoms) * self.factor[self.parent]
        return np.where(self.changed, scaled, self.input_area_m2[self.parent])


def _explode(pieces: _Pieces, new: np.ndarray, rows: np.ndarray) -> _Pieces:
    """``pieces`` with the geometries of ``rows`` replaced by ``new`` (split into polygons, empty ones gone)."""
    parts, which = shapely.get_parts(new, return_index=True)
    good = np.array([p.geom_type == "Polygon" and p.area > 0 for p in parts], dtype=bool)
    return _replace_rows(pieces, rows, parts[good], rows[which[good]])


def _replace_rows(pieces: _Pieces, rows: np.ndarray, parts: np.ndarray, src: np.ndarray) -> _Pieces:
    """``pieces`` with ``rows`` replaced by ``parts`` (polygons), each made from the piece ``src`` names."""
    keep = np.ones(len(pieces.geoms), dtype=bool)
    keep[rows] = False
    return _Pieces(
        geoms=np.concatenate([pieces.geoms[keep], parts]),
        parent=np.concatenate([pieces.parent[keep], pieces.parent[src]]),
        confidence=np.concatenate([pieces.confidence[keep], pieces.confidence[src]]),
        changed=np.concatenate([pieces.changed[keep], np.ones(len(parts), dtype=bool)]),
        factor=pieces.factor,
        input_area_m2=pieces.input_area_m2,
    )


def _opening_radius(opening_m: float, frame: PixelFrame) -> float:
    """Half the opening's side in frame units, rounded to half a pixel (exact on pixel outlines)."""
    return round(opening_m / frame.unit_m) / 2.0


def _open(pieces: _Pieces, radius: float, together: bool) -> _Pieces:
    """Morphological opening by a square of side ``2 * radius``; ``together``: of the union (instances)."""
    geoms = pieces.geoms
    if together:
        union = shapely.union_all(geoms)
        opened = _opening(np.array([union], dtype=object), radius)[0]
        shapely.prepare(opened)
        rows = np.flatnonzero(~shapely.covered_by(geoms, opened))
        return _explode(pieces, shapely.intersection(geoms[rows], opened), rows)
    opened = _opening(geoms, radius)
    rows = np.flatnonzero(shapely.area(opened) < shapely.area(geoms))
    return _explode(pieces, opened[rows], rows)


def raster_opening_side(settings: PostprocessSettings, info: RasterInfo) -> int:
    """The side (pixels) of the square a semantic model's mask is opened by on the raster (:func:`open_mask`),
    or 0 when step 1 is off or the raster's pixels are not square on the ground (then polygons are opened)."""
    if settings.opening_m <= 0:
        return 0
    frame = PixelFrame.of(info)
    if not frame.to_frame.almost_equals(~info.transform):
        return 0
    return round(2 * _opening_radius(settings.opening_m, frame))


def open_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """Step 1 on the raster: the mask whose pixel outlines are those the polygon opening by a square of
    ``side`` pixels gives.

    On pixel outlines the polygon opening (buffer in, buffer out, mitred) keeps exactly the union of the whole
    (``side`` + 1)-pixel blocks inside the polygon: a part exactly ``side`` pixels wide erodes to a line, which
    has no area and is dropped. That union is the binary opening by an (``side`` + 1)² square, which costs a
    fraction of the buffers, and vectorizing the opened mask replaces vectorizing the mask.

    Computed with OpenCV's erosion and dilation (outside the array counts as background, the dilation anchored on
    the reflected square), which give ``scipy.ndimage.binary_opening``'s pixels about ten times faster.
    """
    size = side + 1
    square = np.ones((size, size), np.uint8)
    border = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
    eroded = cv2.erode(np.ascontiguousarray(mask, dtype=np.uint8), square, anchor=(size // 2, size // 2), **border)
    reflected = (size - 1 - size // 2, size - 1 - size // 2)
    return cv2.dilate(eroded, square, anchor=reflected, **border).astype(bool)


def split_touching(prob: np.ndarray, mask: np.ndarray, core: float) -> np.ndarray:
    """Instance labels (int32) of the connected parts of ``mask`` that hold two or more cores (8-connected pixels
    of probability >= ``core``), each cut by a marker watershed of ``-prob`` from its cores; 0 elsewhere (outside
    ``mask``, and the parts that stay whole).

    Each part is labelled from its own pixels alone (the watershed runs on its bounding box, masked to it), so
    every chunk that sees a building's part whole labels it alike, and the cost follows the parts that split
    (one watershed per part: on this machine faster than one over all of them packed together)."""
    parts = _components(mask)
    cores = _components(mask & (prob >= core))
    in_core = np.flatnonzero(cores)
    part_of_core = np.zeros(int(cores.max()) + 1, np.int64)
    part_of_core[cores.ravel()[in_core]] = parts.ravel()[in_core]
    cores_per_part = np.bincount(part_of_core[1:], minlength=int(parts.max()) + 1)
    labels = np.zeros(mask.shape, np.int32)
    boxes = ndimage.find_objects(parts)
    for part in np.flatnonzero(cores_per_part[1:] >= 2) + 1:
        box = boxes[part - 1]
        inside = parts[box] == part
        flooded = watershed(-prob[box], markers=np.where(inside, cores[box], 0), mask=inside, connectivity=2)
        labels[box][inside] = flooded[inside]  # core numbers: unique over the array
    return labels


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of ``mask`` labelled 1..n (int32; OpenCV's, several times faster than
    ``scipy.ndimage.label``, numbered in another order)."""
    _, labels = cv2.connectedComponents(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return labels


def _opening(geoms: np.ndarray, radius: float) -> np.ndarray:
    eroded = shapely.buffer(geoms, -radius, join_style="mitre")
    return shapely.intersection(shapely.buffer(eroded, radius, join_style="mitre"), geoms)


def _merge_fragments(pieces: _Pieces, min_area_m2: float) -> _Pieces:
    """Fragments sharing an edge with a building joined to the one they share the longest edge with."""
    for _ in range(4):  # a fragment that only touches a merged fragment joins on the next round
        area = pieces.area_m2()
        frag = np.flatnonzero(area < min_area_m2)
        big = np.flatnonzero(area >= min_area_m2)
        if not len(frag) or not len(big):
            return pieces
        fi, bi = shapely.STRtree(pieces.geoms[big]).query(pieces.geoms[frag], predicate="intersects")
        shared = shapely.length(shapely.intersection(pieces.geoms[frag[fi]], pieces.geoms[big[bi]]))
        best: dict[int, tuple[float, int]] = {}
        for f, b, length in zip(frag[fi], big[bi], shared, strict=True):
            if length > 0 and length > best.get(int(f), (0.0, -1))[0]:
                best[int(f)] = (float(length), int(b))
        if not best:
            return pieces
        pieces = _join(pieces, best, area)
    return pieces


def _join(pieces: _Pieces, best: dict[int, tuple[float, int]], area: np.ndarray) -> _Pieces:
    """Each fragment of ``best`` (fragment -> (shared length, building)) unioned into its building."""
    groups: dict[int, list[int]] = {}
    for f, (_, b) in best.items():
        groups.setdefault(b, []).append(f)
    geoms, confidence, changed = pieces.geoms.copy(), pieces.confidence.copy(), pieces.changed.copy()
    merged: list[int] = []
    for b, frags in groups.items():
        union = shapely.union_all(geoms[[b, *frags]])
        if union.geom_type != "Polygon":
            continue
        members = [b, *frags]
        weights = area[members]
        confidence[b] = float(np.average(confidence[members], weights=weights)) if weights.sum() > 0 else 0.0
        geoms[b], changed[b] = union, True
        merged += frags
    keep = np.setdiff1d(np.arange(len(geoms)), merged)
    return replace(pieces, geoms=geoms, confidence=confidence, changed=changed).take(keep)


def _fill_holes(pieces: _Pieces, hole_area_m2: float) -> _Pieces:
    """Holes smaller than ``hole_area_m2`` filled unless another polygon lies in them."""
    rows = np.flatnonzero(shapely.get_num_interior_rings(pieces.geoms) > 0)
    if not len(rows):
        return pieces
    points = shapely.STRtree(shapely.point_on_surface(pieces.geoms))
    geoms, changed = pieces.geoms.copy(), pieces.changed.copy()
    for i in rows:
        polygon, factor = geoms[i], pieces.factor[pieces.parent[i]]
        kept = []
        for ring in polygon.interiors:
            hole = Polygon(ring)
            small = hole.area * factor < hole_area_m2
            if not small or len(points.query(hole, predicate="contains")):
                kept.append(ring)
        if len(kept) < len(polygon.interiors):
            geoms[i], changed[i] = Polygon(polygon.exterior, kept), True
    return replace(pieces, geoms=geoms, changed=changed)


def clean_polygons(
    polygons: gpd.GeoDataFrame,
    frame: PixelFrame,
    settings: PostprocessSettings,
    instances: bool = False,
) -> gpd.GeoDataFrame:
    """Steps 1-4 of the module docstring on polygons (``confidence``, ``geometry``) vectorized on the raster
    of ``frame``; ``instances``: they may share edges (open them together). Fresh RangeIndex."""
    min_area = settings.min_area_m2
    if polygons.empty or not (min_area > 0 or settings.reshapes):
        return polygons.reset_index(drop=True)
    areas = metric_areas(polygons)
    if not settings.reshapes:
        return polygons[areas >= min_area].reset_index(drop=True)
    original = np.asarray(polygons.geometry.values, dtype=object)
    geoms = frame.forward(original)
    frame_area = shapely.area(geoms)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(frame_area > 0, areas / frame_area, 0.0)
    n = len(geoms)
    pieces = _Pieces(
        geoms, np.arange(n), polygons["confidence"].to_numpy(float), np.zeros(n, bool), factor, areas
    )
    radius = _opening_radius(settings.opening_m, frame) if settings.opening_m > 0 else 0.0
    if radius > 0:
        pieces = _open(pieces, radius, together=instances)
    if settings.merge_fragments and min_area > 0:
        pieces = _merge_fragments(pieces, min_area)
    if min_area > 0:
        pieces = pieces.take(np.flatnonzero(pieces.area_m2() >= min_area))
    if settings.hole_area_m2 > 0:
        pieces = _fill_holes(pieces, settings.hole_area_m2)
    order = np.lexsort((pieces.changed, pieces.parent))  # input order, a building before its cut-off parts
    pieces = pieces.take(order)
    out = original[pieces.parent]
    if pieces.changed.any():
        out[pieces.changed] = frame.back(pieces.geoms[pieces.changed])
    crs = polygons.crs
    return gpd.GeoDataFrame({"confidence": pieces.confidence}, geometry=gpd.GeoSeries(out, crs=crs), crs=crs)


# -------------------- outlines


def postprocess_chunk(
    polygons: gpd.GeoDataFrame,
    info: RasterInfo,
    settings: PostprocessSettings,
    instances: bool = False,
) -> gpd.GeoDataFrame:
    """All steps of the module docstring on the raw polygons of one chunk of ``info`` (vectorized on its pixel
    grid, columns ``confidence`` and ``geometry``); ``instances``: buildings may share edges, which stay shared.
    A semantic mask opened on the raster (:func:`open_mask`) is passed with ``opening_m`` 0.
    """
    frame = PixelFrame.of(info)
    cleaned = clean_polygons(polygons, frame, settings, instances)
    if not instances:
        return refine_outlines(cleaned, info.transform, settings.simplify_m, settings.regularize)
    if not settings.regularize:
        crs_units_per_m = abs(info.transform.a) / info.gsd_m
        return simplify_coverage(cleaned, settings.simplify_m * crs_units_per_m)
    if cleaned.empty:
        return cleaned
    tol = max(1.0, settings.simplify_m / frame.unit_m)
    regular = regularize_coverage(frame.forward(np.asarray(cleaned.geometry.values, dtype=object)), tol)
    crs = cleaned.crs
    return gpd.GeoDataFrame(
        {"confidence": cleaned["confidence"].to_numpy()},
        geometry=gpd.GeoSeries(frame.back(regular), crs=crs),
        crs=crs,
    )
