"""Mosaics: input files on one pixel grid that touch or overlap, grouped and read as one GDAL VRT.

A folder of adjacent tiles (XYZ tiles, a cut-up orthophoto) is one image to the model: windows, chunks and
buildings cross the tile edges. :func:`plan_mosaics` groups the usable inputs (connected components of footprint
adjacency among files of the same CRS, pixel size, pixel grid, band count, data type and RGB bands) without
touching pixels; :func:`write_vrt` writes a group's VRT (hand-written XML, deterministic, rewritten only when
its text changes); :func:`tile_of_points` names the tile that holds each building's representative point.

The VRT keeps every band of the tiles, places each tile at its whole-pixel offset and has one dataset mask
band: a pixel is valid where a tile covering it is valid (its nodata, alpha or internal mask; for a tile with
per-band nodata values, valid unless all three RGB bands hold nodata), so gaps between tiles are invalid.
Where tiles overlap, a later tile (in path order) is drawn over an earlier one, except where it is masked.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from bldgseg.files import atomic_replace
from bldgseg.io import RasterInfo

__all__ = [
    "GRID_TOLERANCE_PX",
    "PIXEL_SIZE_RTOL",
    "TOUCH_TOLERANCE_PX",
    "Mosaic",
    "MosaicTile",
    "group_rasters",
    "mosaic_vrt_xml",
    "plan_mosaics",
    "tile_of_points",
    "write_vrt",
]

#: Tiles whose origins lie this close (in pixels) to one pixel grid are on it.
GRID_TOLERANCE_PX = 0.01
#: Footprints this close (in pixels) touch.
TOUCH_TOLERANCE_PX = 0.25
#: Pixel sizes equal to this relative tolerance are the same.
PIXEL_SIZE_RTOL = 1e-6

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class MosaicTile:
    """One file of a mosaic: its place in the mosaic (whole pixels) and its footprint in the CRS."""

    path: Path
    col: int
    row: int
    width: int
    height: int
    #: ``(left, bottom, right, top)`` in the mosaic's CRS.
    bounds: tuple[float, float, float, float]
    #: Bands whose masks make up the tile's share of the mosaic's mask (one unless nodata is per band).
    mask_bands: tuple[int, ...]
    #: Whether another tile of the mosaic overlaps this one (then its masked pixels let the one below show).
    overlapped: bool = False


@dataclass(frozen=True)
class Mosaic:
    """A group of touching tiles read as one raster through the VRT at ``path``."""

    name: str
    path: Path
    tiles: tuple[MosaicTile, ...]
    crs: object  # rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    bands: tuple[int, int, int]

    @property
    def tile_paths(self) -> list[Path]:
        return [t.path for t in self.tiles]

    def tiles_in_window(self, window: Window) -> tuple[MosaicTile, ...]:
        """The tiles that cover part of ``window`` (mosaic pixels)."""
        c0, r0 = int(window.col_off), int(window.row_off)
        c1, r1 = c0 + int(window.width), r0 + int(window.height)
        return tuple(
            t
            for t in self.tiles
            if t.col < c1 and t.col + t.width > c0 and t.row < r1 and t.row + t.height > r0
        )

    def summary(self) -> dict[str, object]:
        """The mosaic as the ``runs`` table and ``bldgseg info`` list it."""
        return {
            "name": self.name,
            "vrt": str(self.path),
            "width": self.width,
            "height": self.height,
            "tiles": [str(t.path) for t in self.tiles],
        }


# ------------------------------------------------------------------------------------------------ grouping


def _grid_key(info: RasterInfo) -> tuple | None:
    """What files must share to be mosaicked (None: not north-up, never mosaicked)."""
    t = info.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        return None
    return (info.crs.to_string(), info.count, info.dtype, info.bands)


def _same_grid(a: RasterInfo, b: RasterInfo) -> bool:
    """Same pixel size (within :data:`PIXEL_SIZE_RTOL`) and origins on one pixel grid."""
    ta, tb = a.transform, b.transform
    same_size = np.isclose(ta.a, tb.a, rtol=PIXEL_SIZE_RTOL, atol=0) and np.isclose(
        ta.e, tb.e, rtol=PIXEL_SIZE_RTOL, atol=0
    )
    if not same_size:
        return False
    cols, rows = (tb.c - ta.c) / ta.a, (tb.f - ta.f) / ta.e
    return abs(cols - round(cols)) <= GRID_TOLERANCE_PX and abs(rows - round(rows)) <= GRID_TOLERANCE_PX


def _bounds(info: RasterInfo) -> tuple[float, float, float, float]:
    return window_bounds(Window(0, 0, info.width, info.height), info.transform)


def _overlap(a: RasterInfo, b: RasterInfo) -> tuple[float, float]:
    """Overlap of two footprints along x and y in pixels of ``a`` (negative: the gap between them)."""
    la, ba, ra, ta = _bounds(a)
    lb, bb, rb, tb = _bounds(b)
    return (min(ra, rb) - max(la, lb)) / a.transform.a, (min(ta, tb) - max(ba, bb)) / -a.transform.e


def _touch(a: RasterInfo, b: RasterInfo) -> bool:
    ox, oy = _overlap(a, b)
    return ox >= -TOUCH_TOLERANCE_PX and oy >= -TOUCH_TOLERANCE_PX


def _overlaps(a: RasterInfo, b: RasterInfo) -> bool:
    ox, oy = _overlap(a, b)
    return ox > TOUCH_TOLERANCE_PX and oy > TOUCH_TOLERANCE_PX


def group_rasters(infos: Sequence[RasterInfo]) -> list[list[RasterInfo]]:
    """Connected components of "touches or overlaps, on the same grid"; groups and members in input order.

    Files that touch nothing (or differ in CRS, pixel size or grid, band count, data type or RGB bands) are
    groups of one.
    """
    parent = list(range(len(infos)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_key: dict[tuple, list[int]] = defaultdict(list)
    for i, info in enumerate(infos):
        key = _grid_key(info)
        if key is not None:
            by_key[key].append(i)
    for members in by_key.values():
        for i, j in _candidate_pairs([infos[k] for k in members]):
            a, b = infos[members[i]], infos[members[j]]
            if _touch(a, b) and _same_grid(a, b):
                parent[root(members[i])] = root(members[j])
    groups: dict[int, list[RasterInfo]] = {}
    for i, info in enumerate(infos):
        groups.setdefault(root(i), []).append(info)
    return list(groups.values())


def _candidate_pairs(infos: Sequence[RasterInfo]) -> Iterable[tuple[int, int]]:
    """Index pairs ``i < j`` whose footprints (grown by the touch tolerance) intersect."""
    if len(infos) < 2:
        return []
    import shapely

    boxes = []
    for info in infos:
        left, bottom, right, top = _bounds(info)
        gx, gy = TOUCH_TOLERANCE_PX * info.transform.a, TOUCH_TOLERANCE_PX * -info.transform.e
        boxes.append(shapely.box(left - gx, bottom - gy, right + gx, top + gy))
    tree = shapely.STRtree(boxes)
    left_idx, right_idx = tree.query(boxes, predicate="intersects")
    return [(int(i), int(j)) for i, j in zip(left_idx, right_idx, strict=True) if i < j]


# ------------------------------------------------------------------------------------------------ planning


def plan_mosaics(infos: Sequence[RasterInfo], folder: Path) -> list[Mosaic]:
    """The mosaics (groups of two or more files) among ``infos``, their VRTs to be written in ``folder``.

    A mosaic is named ``mosaic_<first file's stem>_<N>tiles`` (with the first file's folder name before the
    stem where two mosaics would share a name); its tiles are in path order. Only local files that did not
    come from a STAC Item are grouped: a remote raster or an Item's image is always its own raster.
    """
    groupable = [i for i in infos if isinstance(i.path, Path) and i.stac_item is None]
    groups = [sorted(g, key=lambda i: i.path) for g in group_rasters(groupable) if len(g) > 1]
    names = _unique_names(groups)
    return [_mosaic(group, name, Path(folder)) for group, name in zip(groups, names, strict=True)]


def _unique_names(groups: list[list[RasterInfo]]) -> list[str]:
    """``mosaic_<stem>_<N>tiles`` per group; the folder name added where stems repeat, a counter if still."""
    plain = [f"mosaic_{g[0].path.stem}_{len(g)}tiles" for g in groups]
    names = [
        f"mosaic_{g[0].path.parent.name}_{g[0].path.stem}_{len(g)}tiles" if plain.count(name) > 1 else name
        for g, name in zip(groups, plain, strict=True)
    ]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if names.count(name) == 1 else f"{name}_{seen[name]}")
    return unique


def _mosaic(group: list[RasterInfo], name: str, folder: Path) -> Mosaic:
    first = group[0]
    ref = first.transform
    cols = [round((i.transform.c - ref.c) / ref.a) for i in group]
    rows = [round((i.transform.f - ref.f) / ref.e) for i in group]
    col0, row0 = min(cols), min(rows)
    transform = Affine(ref.a, 0.0, ref.c + col0 * ref.a, 0.0, ref.e, ref.f + row0 * ref.e)
    overlapped: set[int] = set()
    for i, j in _candidate_pairs(group):
        if _overlaps(group[i], group[j]):
            overlapped.update((i, j))
    tiles = tuple(
        MosaicTile(
            path=info.path,
            col=c - col0,
            row=r - row0,
            width=info.width,
            height=info.height,
            bounds=_bounds(info),
            mask_bands=_mask_bands(info),
            overlapped=k in overlapped,
        )
        for k, (info, c, r) in enumerate(zip(group, cols, rows, strict=True))
    )
    return Mosaic(
        name=name,
        path=folder / f"{name}.vrt",
        tiles=tiles,
        crs=first.crs,
        transform=transform,
        width=max(t.col + t.width for t in tiles),
        height=max(t.row + t.height for t in tiles),
        count=first.count,
        dtype=first.dtype,
        bands=first.bands,
    )


def _mask_bands(info: RasterInfo) -> tuple[int, ...]:
    """Per-band nodata: each distinct RGB band's mask; otherwise the mask is per dataset (band 1's)."""
    if info.nodata is None:
        return (info.bands[0],)
    return tuple(dict.fromkeys(info.bands))


# -------------------------------------------------------------------------------------------------- VRT


def mosaic_vrt_xml(mosaic: Mosaic) -> str:
    """The VRT text of ``mosaic`` (deterministic: the same mosaic gives the same text)."""
    gdal_type = _GDAL_TYPES.get(mosaic.dtype)
    if gdal_type is None:
        raise ValueError(f"{mosaic.name}: pixel type {mosaic.dtype} cannot be mosaicked")
    t = mosaic.transform
    lines = [
        f'<VRTDataset rasterXSize="{mosaic.width}" rasterYSize="{mosaic.height}">',
        f"  <SRS>{escape(mosaic.crs.to_wkt())}</SRS>",
        f"  <GeoTransform>{t.c!r}, {t.a!r}, 0.0, {t.f!r}, 0.0, {t.e!r}</GeoTransform>",
    ]
    for band in range(1, mosaic.count + 1):
        interp = _colour_interp(mosaic.bands, band)
        lines.append(f'  <VRTRasterBand dataType="{gdal_type}" band="{band}">')
        if interp:
            lines.append(f"    <ColorInterp>{interp}</ColorInterp>")
        for tile in mosaic.tiles:
            extra = "<UseMaskBand>true</UseMaskBand>" if tile.overlapped else ""
            kind = "ComplexSource" if tile.overlapped else "SimpleSource"
            lines.append("    " + _source(kind, tile, str(band), extra))
        lines.append("  </VRTRasterBand>")
    lines += ["  <MaskBand>", '    <VRTRasterBand dataType="Byte">']
    for tile in mosaic.tiles:
        for band in tile.mask_bands:
            lines.append("      " + _source("ComplexSource", tile, f"mask,{band}", "<NODATA>0</NODATA>"))
    lines += ["    </VRTRasterBand>", "  </MaskBand>", "</VRTDataset>", ""]
    return "\n".join(lines)


def _colour_interp(bands: tuple[int, int, int], band: int) -> str:
    """Red, Green, Blue for the bands read as RGB (the first time each appears), else none."""
    for name, chosen in zip(("Red", "Green", "Blue"), bands, strict=True):
        if chosen == band:
            return name
    return ""


def _source(kind: str, tile: MosaicTile, band: str, extra: str) -> str:
    return (
        f'<{kind}><SourceFilename relativeToVRT="0">{escape(str(tile.path))}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{tile.width}" ySize="{tile.height}"/>'
        f'<DstRect xOff="{tile.col}" yOff="{tile.row}" xSize="{tile.width}" ySize="{tile.height}"/>'
        f"{extra}</{kind}>"
    )


def write_vrt(mosaic: Mosaic) -> Path:
    """Write the mosaic's VRT atomically, unless the file already holds the same text; returns its path."""
    text = mosaic_vrt_xml(mosaic)
    try:
        if mosaic.path.read_text() == text:
            return mosaic.path
    except (OSError, UnicodeDecodeError):
        pass
    mosaic.path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_replace(mosaic.path, lambda tmp: tmp.write_text(text), ".vrt")


def vrt_digest(mosaic: Mosaic) -> str:
    """A short hash of the VRT text (tile paths, places, bands): part of each mosaic unit's identity."""
    return hashlib.sha1(mosaic_vrt_xml(mosaic).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ source tiles


def tile_of_points(xs: np.ndarray, ys: np.ndarray, tiles: Sequence[MosaicTile]) -> list[str]:
    """The path of the tile that holds each point (x in [left, right), y in (bottom, top]).

    Where tiles overlap, the last one (drawn on top in the VRT) is named; a point in a gap between tiles takes
    the nearest tile.
    """
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if not len(tiles):
        raise ValueError("tile_of_points needs at least one tile")
    bounds = np.array([t.bounds for t in tiles])  # (T, 4): left, bottom, right, top
    left, bottom, right, top = (bounds[:, k][:, None] for k in range(4))
    inside = (xs >= left) & (xs < right) & (ys > bottom) & (ys <= top)  # (T, N)
    dx = np.maximum(np.maximum(left - xs, xs - right), 0.0)
    dy = np.maximum(np.maximum(bottom - ys, ys - top), 0.0)
    last_inside = len(tiles) - 1 - np.argmax(inside[::-1], axis=0)
    nearest = np.argmin(np.hypot(dx, dy), axis=0)
    chosen = np.where(inside.any(axis=0), last_inside, nearest)
    return [str(tiles[i].path) for i in chosen]
