"""Training-data loaders: GeoTIFFs + vector footprints, image/mask pairs, colour-coded label pairs.

Every loader returns a :class:`SampleList` (a plain ``list`` of :class:`TrainSample` with a ``skipped``
attribute listing inputs that were left out and why). Samples are held in memory at the target ground sample
distance; mask value :data:`IGNORE_INDEX` (255) marks pixels the loss must ignore (outside the raster's valid
area, unknown label colours). ``group`` is the geographic unit used by :func:`bldgseg.train.split.geographic_split`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from bldgseg.errors import InputError
from bldgseg.instances import rasterize_instances
from bldgseg.io import DEFAULT_GLOB, RasterInfo, SkippedInput, open_raster_info, read_rgb, scan_inputs
from bldgseg.train.data import Sample

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "LABELMEFACADE_CLASSES",
    "LABELMEFACADE_GROUP_PATTERN",
    "LABELMEFACADE_PALETTE",
    "SampleList",
    "TrainSample",
    "load_geotiff_footprints",
    "load_mask_pairs",
    "load_palette_pairs",
]

#: Mask value of pixels that carry no label (the loss ignores them).
IGNORE_INDEX = 255
#: File types read by the pair loaders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Mask file stems may end with one of these after the image stem (``a.png`` <- ``a.mask.png``, ``a_mask.png``).
MASK_STEM_SUFFIXES = (".mask", "_mask")
#: Relative GSD difference below which imagery is not resampled.
GSD_TOLERANCE = 0.02

#: LabelMeFacade classes, in the order of the dataset README (index = class id).
LABELMEFACADE_CLASSES: tuple[str, ...] = (
    "various",
    "building",
    "car",
    "door",
    "pavement",
    "road",
    "sky",
    "vegetation",
    "window",
)
#: LabelMeFacade label colours (R, G, B) -> class id, from the dataset README ("Color codes for labels").
#: The label PNGs are stored as 16-bit RGBA (128 is written as 32896 = 128 * 257); they are reduced to 8 bits
#: before lookup. Checked on all 523 label files in ../shared/data/facade/labelmefacade: every pixel is one of
#: these nine colours and alpha is always opaque.
LABELMEFACADE_PALETTE: dict[tuple[int, int, int], int] = {
    (0, 0, 0): 0,  # various
    (128, 0, 0): 1,  # building
    (128, 0, 128): 2,  # car
    (128, 128, 0): 3,  # door
    (128, 128, 128): 4,  # pavement
    (128, 64, 0): 5,  # road
    (0, 128, 128): 6,  # sky
    (0, 128, 0): 7,  # vegetation
    (0, 0, 128): 8,  # window
}
#: Groups LabelMeFacade photos by collection (the part of the name before ``__``), so consecutive shots of one
#: street never land on both sides of a split.
LABELMEFACADE_GROUP_PATTERN = r"^(.+?)__"


@dataclass
class TrainSample(Sample):
    """A :class:`Sample` with the unit used for splitting and, when georeferenced, its footprint.

    ``image`` (H, W, 3) uint8; ``mask`` (H, W) uint8: 0/1 for buildings or a class index, 255 = ignore;
    ``source`` the file (and tile) it came from; ``group`` the geographic unit kept whole by splits;
    ``bounds`` ``(minx, miny, maxx, maxy)`` in EPSG:4326, or None without georeferencing.
    """

    group: str = ""
    bounds: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if not self.group:
            self.group = self.source


class SampleList(list):
    """``list[TrainSample]`` that also carries ``skipped``: the inputs left out, each with its reason."""

    def __init__(self, samples: Iterable[TrainSample] = (), skipped: Iterable[SkippedInput] = ()):
        super().__init__(samples)
        self.skipped: list[SkippedInput] = list(skipped)


# ------------------------------------------------------------------------------------------- helpers


def _check_gsd(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    try:
        gsd = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: {value!r} is not a number; give metres per pixel, e.g. 0.3") from exc
    if not math.isfinite(gsd) or gsd <= 0:
        raise InputError(f"{what}: {value!r} must be a positive number of metres per pixel, e.g. 0.3")
    return gsd


def _scale_factor(source_gsd: float, target_gsd: float | None) -> float:
    """Output pixels per source pixel (>1 enlarges); exactly 1 within :data:`GSD_TOLERANCE`."""
    if target_gsd is None:
        return 1.0
    factor = source_gsd / target_gsd
    return 1.0 if abs(factor - 1.0) < GSD_TOLERANCE else factor


def _bounds_4326(crs: Any, transform: Affine, height: int, width: int) -> tuple[float, float, float, float]:
    xs, ys = zip(
        *(transform * (c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))), strict=True
    )
    b = transform_bounds(crs, "EPSG:4326", min(xs), min(ys), max(xs), max(ys), densify_pts=21)
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def _resize_image(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    h, w = image.shape[:2]
    if (h, w) == tuple(out_hw):
        return image
    interp = cv2.INTER_AREA if out_hw[0] * out_hw[1] < h * w else cv2.INTER_LINEAR
    return cv2.resize(image, (out_hw[1], out_hw[0]), interpolation=interp)


def _resize_binary_mask(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
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


def _is_georeferenced(path: Path) -> bool:
    """True for a raster with a CRS and a real geotransform (plain PNG/JPEG files never are)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return bool(ds.crs) and not ds.transform.is_identity
    except RasterioError as exc:
        raise InputError(
            f"{path.name}: cannot be opened ({' '.join(str(exc).split())}); check that the file is complete"
        ) from exc


def _read_photo(path: Path) -> np.ndarray:
    """Any PNG/JPEG/TIFF as (H, W, 3) uint8 RGB (16-bit data is reduced to 8 bits)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(
            f"{path.name}: cannot be read as an image; check that it is a complete PNG/JPEG/TIFF"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_single_band(path: Path) -> np.ndarray:
    """A mask file as (H, W) uint8: band 1 of a TIFF, the grey level of a PNG/JPEG."""
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as ds:
                    band = ds.read(1)
        except RasterioError as exc:
            raise InputError(
                f"{path.name}: cannot be read as a mask ({' '.join(str(exc).split())}); export it again"
            ) from exc
        if band.dtype != np.uint8:
            if band.size and (np.nanmin(band) < 0 or np.nanmax(band) > 255):
                raise InputError(
                    f"{path.name}: mask values outside 0..255 ({band.dtype}); "
                    "write the mask as 0/1 or 0/255 uint8"
                )
            band = np.nan_to_num(band).astype(np.uint8)
        return band
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise InputError(
            f"{path.name}: cannot be read as a mask image; check that it is a complete PNG/JPEG/TIFF"
        )
    return mask


def _binary_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """0/1 -> as is; 0/1 with 255 -> 255 is ignore; 0/255 (or JPEG-noisy grey) -> >= 128 is building."""
    values = np.unique(mask)
    if set(values.tolist()) <= {0, 1}:
        return mask.astype(np.uint8, copy=False)
    if set(values.tolist()) <= {0, 1, IGNORE_INDEX} and 1 in values:
        return mask.astype(np.uint8, copy=False)
    if values.max() >= 128:
        return (mask >= 128).astype(np.uint8)
    raise InputError(
        f"{name}: mask values {values[:8].tolist()} are neither 0/1 nor 0/255; "
        "write building masks as 0/1 or 0/255 (use load_palette_pairs for class labels)"
    )


def _list_files(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], what: str) -> list[Path]:
    """Image files in a folder (not recursive), or the files given, with a supported suffix."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend(
                p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such {what} file or folder; check the path")
    return files


def _mask_key(path: Path) -> str:
    stem = path.stem
    for suffix in MASK_STEM_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _match_pairs(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    masks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    what: str,
) -> tuple[list[tuple[Path, Path]], list[SkippedInput]]:
    """(image, mask) pairs matched by stem; images without a mask are returned as skipped."""
    image_files = _list_files(images, "image")
    mask_files = _list_files(masks, what)
    by_key: dict[str, Path] = {}
    for path in mask_files:
        key = _mask_key(path)
        if key in by_key:
            raise InputError(
                f"{path.name}: two {what} files for image stem '{key}' ({by_key[key].name} and {path.name}); "
                f"keep one {what} per image"
            )
        by_key[key] = path
    pairs: list[tuple[Path, Path]] = []
    skipped: list[SkippedInput] = []
    seen: set[str] = set()
    for image in image_files:
        if image.stem in seen:
            raise InputError(
                f"{image.name}: two images with the stem '{image.stem}'; keep one image per stem"
            )
        seen.add(image.stem)
        mask = by_key.get(image.stem)
        if mask is None:
            skipped.append(
                SkippedInput(image, f"{image.name}: no {what} named {image.stem}.png / {image.stem}.mask.png")
            )
        else:
            pairs.append((image, mask))
    if not pairs:
        where = image_files[0].parent.name if image_files else "images"
        raise InputError(
            f"{where}: no image has a {what} with the same file stem ({len(image_files)} images, "
            f"{len(mask_files)} {what}s); name them e.g. a.png + a.png, a.mask.png or a_mask.png"
        )
    return pairs, skipped


def _group_of(stem: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        return stem
    match = pattern.search(stem)
    if match is None:
        raise InputError(
            f"{stem}: file stem does not match group_pattern {pattern.pattern!r}; "
            "fix the pattern (its first capture group names the group) or rename the file"
        )
    return match.group(1) if pattern.groups else match.group(0)


def _compile(group_pattern: str | None) -> re.Pattern[str] | None:
    if group_pattern is None:
        return None
    try:
        return re.compile(group_pattern)
    except re.error as exc:
        raise InputError(
            f"group_pattern {group_pattern!r}: invalid regular expression ({exc}); fix it"
        ) from exc


# -------------------------------------------------------------------------------- GeoTIFF + footprints


def _read_footprints(footprints: Path, layer: str | int | None) -> Any:
    """Polygonal footprints as a GeoDataFrame (invalid geometries repaired, others dropped)."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    name = footprints.name
    if not footprints.exists():
        raise InputError(f"{footprints}: no such footprint file; check the path")
    try:
        if layer is None:
            layers = [row[0] for row in pyogrio.list_layers(footprints) if row[1] is not None]
            if len(layers) > 1:
                raise InputError(
                    f"{name}: has {len(layers)} vector layers ({', '.join(map(str, layers[:5]))}); "
                    "choose one with layer="
                )
            layer = layers[0] if layers else None
        gdf = pyogrio.read_dataframe(footprints, layer=layer)
    except (DataSourceError, DataLayerError) as exc:
        raise InputError(
            f"{name}: cannot be read as vector footprints ({' '.join(str(exc).split())}); "
            "check the file with `ogrinfo` (and the layer name)"
        ) from exc
    if gdf.crs is None:
        raise InputError(
            f"{name}: footprints have no coordinate reference system; "
            f"assign one with `ogr2ogr -a_srs EPSG:4326 fixed.gpkg {footprints}`"
        )
    import geopandas

    geoms = np.asarray(gdf.geometry.values, dtype=object)
    geoms = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    polygons = np.array([_polygonal_part(g) for g in geoms], dtype=object)
    polygons = polygons[~shapely.is_empty(polygons)] if len(polygons) else polygons
    if len(geoms) and not len(polygons):
        raise InputError(f"{name}: no polygon footprints (only points or lines); give building polygons")
    return geopandas.GeoDataFrame(geometry=list(polygons), crs=gdf.crs)


def _polygonal_part(geom: Any) -> Any:
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        polys = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
        return shapely.union_all(polys) if polys else shapely.Polygon()
    return shapely.Polygon()


def _edges(size: int, step: int) -> list[int]:
    """Cut ``size`` into ceil(size / step) nearly equal parts (no slivers): their integer edges."""
    n = max(1, math.ceil(size / step))
    return [round(i * size / n) for i in range(n + 1)]


def load_geotiff_footprints(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    footprints: str | os.PathLike[str],
    target_gsd: float,
    layer: str | int | None = None,
    tile_px: int = 1024,
    *,
    block_tiles: int = 4,
    glob: str = DEFAULT_GLOB,
    bands: Sequence[int] | None = None,
) -> SampleList:
    """Rasters (any GDAL format) + building footprints (any OGR format) -> samples at ``target_gsd``.

    Rasters are found and validated with :func:`bldgseg.io.scan_inputs`; bad ones are left out and listed in
    the result's ``skipped``. Footprints are read once, reprojected to each raster's CRS and rasterized
    (``all_touched=False``) onto each tile's grid at the target GSD (the source window's transform scaled by
    the resampling factor), so image and mask pixels coincide exactly. Each footprint is also burned as its
    own id into the sample's ``instances`` (:func:`bldgseg.instances.rasterize_instances`), so touching
    buildings stay apart for instance training. Each raster is cut into nearly equal
    tiles of at most ``tile_px`` pixels at the target GSD; ``group`` is ``"{stem}:{row // block_tiles}:{col //
    block_tiles}"`` so neighbouring tiles stay on one side of a split. Pixels outside the raster's valid mask
    are 255 (ignore) in the mask and 0 in the image; tiles with no valid pixel are dropped.
    Raises :class:`InputError` for unreadable footprints or when they overlap none of the rasters.
    """
    target = _check_gsd(target_gsd, "target_gsd")
    assert target is not None
    if int(tile_px) < 16:
        raise InputError(f"tile_px={tile_px}: too small; use at least 16 (e.g. 512 or 1024)")
    if int(block_tiles) < 1:
        raise InputError(f"block_tiles={block_tiles}: must be 1 or more")
    tile_px, block_tiles = int(tile_px), int(block_tiles)
    footprints = Path(footprints).expanduser()
    gdf = _read_footprints(footprints, layer)
    infos, skipped = scan_inputs(images, glob, bands)

    samples = SampleList(skipped=skipped)
    by_crs: dict[str, Any] = {}
    burned_any = False
    for info in infos:
        key = info.crs.to_wkt()
        if key not in by_crs:  # reproject and index the footprints once per CRS
            geoms = np.asarray(gdf.to_crs(info.crs).geometry.values, dtype=object)
            by_crs[key] = (geoms, shapely.STRtree(geoms) if len(geoms) else None)
        geoms, tree = by_crs[key]
        tiles, burned = _footprint_tiles(info, geoms, tree, target, tile_px, block_tiles)
        burned_any |= burned
        samples.extend(tiles)
    if infos and len(gdf) and not burned_any:
        raise InputError(
            f"{footprints.name}: none of the {len(gdf)} footprints overlaps the {len(infos)} raster(s); "
            "check that footprints and imagery cover the same place (and the footprints' CRS)"
        )
    return samples


def _footprint_tiles(
    info: RasterInfo,
    geoms: np.ndarray,
    tree: shapely.STRtree | None,
    target_gsd: float,
    tile_px: int,
    block_tiles: int,
) -> tuple[list[TrainSample], bool]:
    """One raster's tiles at the target GSD, with footprints (in the raster's CRS) burnt in."""
    factor = _scale_factor(info.gsd_m, target_gsd)
    src_step = max(1, math.floor(tile_px / factor))
    row_edges = _edges(info.height, src_step)
    col_edges = _edges(info.width, src_step)
    stem = info.path.stem
    out: list[TrainSample] = []
    burned_any = False
    for ti, (r0, r1) in enumerate(zip(row_edges[:-1], row_edges[1:], strict=True)):
        for tj, (c0, c1) in enumerate(zip(col_edges[:-1], col_edges[1:], strict=True)):
            h, w = r1 - r0, c1 - c0
            oh, ow = max(1, round(h * factor)), max(1, round(w * factor))
            window = Window(c0, r0, w, h)
            rgb, valid = read_rgb(info, window, out_shape=(oh, ow))
            if not valid.any():
                continue
            win_transform = info.transform * Affine.translation(c0, r0)
            out_transform = win_transform * Affine.scale(w / ow, h / oh)
            instances = np.zeros((oh, ow), dtype=np.int32)
            if tree is not None:
                corners = [win_transform * (c, r) for c, r in ((0, 0), (w, 0), (0, h), (w, h))]
                xs, ys = zip(*corners, strict=True)
                hits = tree.query(shapely.box(min(xs), min(ys), max(xs), max(ys)))
                if len(hits):
                    instances = rasterize_instances(geoms[np.sort(hits)], out_transform, (oh, ow))
                    burned_any |= bool(instances.any())
            instances[~valid] = 0
            mask = (instances > 0).astype(np.uint8)
            mask[~valid] = IGNORE_INDEX
            out.append(
                TrainSample(
                    image=np.ascontiguousarray(rgb.transpose(1, 2, 0)),
                    mask=mask,
                    source=f"{info.path.name}:{ti}:{tj}",
                    group=f"{stem}:{ti // block_tiles}:{tj // block_tiles}",
                    bounds=_bounds_4326(info.crs, win_transform, h, w),
                    instances=instances,
                )
            )
    return out, burned_any


# ------------------------------------------------------------------------------------- image/mask pairs


def load_mask_pairs(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    masks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    target_gsd: float | None = None,
    source_gsd: float | None = None,
    *,
    group_pattern: str | None = None,
) -> SampleList:
    """Building image/mask pairs from two folders (or file lists), matched by file stem.

    Mask stems may carry a ``.mask`` or ``_mask`` suffix (``a.png`` <- ``a.mask.png`` / ``a_mask.png``).
    PNG, JPEG and TIFF/GeoTIFF. A georeferenced GeoTIFF image uses its own GSD (valid-mask pixels outside the
    data become 255 in the mask); other images use ``source_gsd``, which is required when ``target_gsd`` is
    given. Without ``target_gsd`` nothing is resampled. Mask values 0/1 or 0/255 become 0/1 (a 0/1 mask may use
    255 for ignore). ``group`` is the image stem, or the first capture group of ``group_pattern`` searched in
    the stem (e.g. ``r"accra_d41d81_r(\\d+)_c\\d+"`` groups Accra chips by row band). Images without a mask are
    listed in the result's ``skipped``.
    """
    target = _check_gsd(target_gsd, "target_gsd")
    source = _check_gsd(source_gsd, "source_gsd")
    pattern = _compile(group_pattern)
    pairs, skipped = _match_pairs(images, masks, "mask")
    samples = SampleList(skipped=skipped)
    for image_path, mask_path in pairs:
        raw_mask = _read_single_band(mask_path)
        bounds = None
        if _is_georeferenced(image_path):
            info = open_raster_info(image_path)
            _check_same_shape(image_path, mask_path, (info.height, info.width), raw_mask.shape)
            factor = _scale_factor(info.gsd_m, target)
            out_hw = (max(1, round(info.height * factor)), max(1, round(info.width * factor)))
            rgb, valid = read_rgb(info, Window(0, 0, info.width, info.height), out_shape=out_hw)
            image = np.ascontiguousarray(rgb.transpose(1, 2, 0))
            mask = _resize_binary_mask(_binary_mask(raw_mask, mask_path.name), out_hw)
            mask[~valid] = IGNORE_INDEX
            bounds = _bounds_4326(info.crs, info.transform, info.height, info.width)
        else:
            if target is not None and source is None:
                raise InputError(
                    f"{image_path.name}: has no georeferencing, so its ground pixel size is unknown; "
                    f"pass source_gsd (metres per pixel) to resample it to target_gsd={target}"
                )
            image = _read_photo(image_path)
            _check_same_shape(image_path, mask_path, image.shape[:2], raw_mask.shape)
            mask = _binary_mask(raw_mask, mask_path.name)
            factor = _scale_factor(source, target) if source is not None else 1.0
            if factor != 1.0:
                h, w = mask.shape
                out_hw = (max(1, round(h * factor)), max(1, round(w * factor)))
                image = _resize_image(image, out_hw)
                mask = _resize_binary_mask(mask, out_hw)
        samples.append(
            TrainSample(
                image=image,
                mask=np.ascontiguousarray(mask, dtype=np.uint8),
                source=image_path.name,
                group=_group_of(image_path.stem, pattern),
                bounds=bounds,
            )
        )
    return samples


def _check_same_shape(image: Path, mask: Path, image_hw: Sequence[int], mask_hw: Sequence[int]) -> None:
    if tuple(image_hw) != tuple(mask_hw):
        raise InputError(
            f"{mask.name}: mask is {mask_hw[1]}x{mask_hw[0]} but {image.name} is {image_hw[1]}x{image_hw[0]}; "
            "masks must have the image's pixel grid"
        )


# ------------------------------------------------------------------------------------ palette labels


def _read_colour_label(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A colour label image as (rgb uint8[H,W,3], transparent bool[H,W]); 16-bit values reduced to 8 bits."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise InputError(f"{path.name}: cannot be read as a label image; check that it is a complete PNG")
    if label.ndim != 3 or label.shape[2] not in (3, 4):
        raise InputError(
            f"{path.name}: expected an RGB colour-coded label image, found {label.ndim}-D with "
            f"{1 if label.ndim == 2 else label.shape[2]} channel(s); export labels as RGB colours"
        )
    if label.dtype == np.uint16:
        label = ((label.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif label.dtype != np.uint8:
        raise InputError(f"{path.name}: unsupported label pixel type {label.dtype}; use 8- or 16-bit PNG")
    transparent = label[..., 3] == 0 if label.shape[2] == 4 else np.zeros(label.shape[:2], dtype=bool)
    return cv2.cvtColor(np.ascontiguousarray(label[..., :3]), cv2.COLOR_BGR2RGB), transparent


def _check_palette(
    palette: Mapping[tuple[int, int, int], int], class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted packed colour keys and their class ids."""
    if not palette:
        raise InputError("palette is empty; give a {(r, g, b): class_id} mapping, e.g. LABELMEFACADE_PALETTE")
    keys, ids = [], []
    for colour, index in palette.items():
        rgb = tuple(int(c) for c in colour)
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise InputError(f"palette colour {colour!r}: must be three integers 0..255 (R, G, B)")
        idx = int(index)
        if not (0 <= idx < len(class_names) or idx == IGNORE_INDEX):
            raise InputError(
                f"palette colour {colour!r} -> {index}: class id out of range for {len(class_names)} "
                f"class names; use 0..{len(class_names) - 1} (or {IGNORE_INDEX} to ignore)"
            )
        keys.append((rgb[0] << 16) | (rgb[1] << 8) | rgb[2])
        ids.append(idx)
    order = np.argsort(keys)
    return np.asarray(keys, dtype=np.int64)[order], np.asarray(ids, dtype=np.uint8)[order]


def _palette_lookup(rgb: np.ndarray, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    known = keys[pos] == packed
    return np.where(known, ids[pos], IGNORE_INDEX).astype(np.uint8)


def load_palette_pairs(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    palette: Mapping[tuple[int, int, int], int],
    class_names: Sequence[str],
    *,
    group_pattern: str | None = None,
) -> SampleList:
    """Photos + colour-coded label PNGs (e.g. LabelMeFacade) -> samples with class-index masks.

    Pairs are matched by stem as in :func:`load_mask_pairs`. Each label colour is looked up in ``palette``
    (``{(r, g, b): class_id}``, ids index ``class_names``; an id of 255 marks a colour as ignored); unknown
    colours and transparent pixels become 255. 16-bit label PNGs are reduced to 8 bits first. No resampling
    (street-level photos have no GSD). ``group`` is the stem or ``group_pattern``'s first capture group
    (:data:`LABELMEFACADE_GROUP_PATTERN` keeps each photo collection together).
    """
    keys, ids = _check_palette(palette, class_names)
    pattern = _compile(group_pattern)
    pairs, skipped = _match_pairs(images, labels, "label")
    samples = SampleList(skipped=skipped)
    for image_path, label_path in pairs:
        image = _read_photo(image_path)
        rgb, transparent = _read_colour_label(label_path)
        _check_same_shape(image_path, label_path, image.shape[:2], rgb.shape[:2])
        mask = _palette_lookup(rgb, keys, ids)
        mask[transparent] = IGNORE_INDEX
        samples.append(
            TrainSample(
                image=image,
                mask=mask,
                source=image_path.name,
                group=_group_of(image_path.stem, pattern),
            )
        )
    return samples
