"""Validation and windowed reading of aerial rasters (local files or URLs) as 8-bit RGB plus a validity mask.

Inputs are found by :mod:`bldgseg.discovery` (``discover_inputs`` and ``SkippedInput`` are re-exported here).

Every problem with an input file surfaces as one :class:`~bldgseg.errors.InputError` whose message starts with
the file name and ends with how to fix it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
from affine import Affine
from pyproj.exceptions import CRSError, ProjError
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from bldgseg.discovery import DEFAULT_GLOB, RasterPath, SkippedInput, discover_inputs, resolve_inputs
from bldgseg.errors import InputError, one_line
from bldgseg.remote import as_raster_path, gdal_path, http_env

__all__ = [
    "DEFAULT_GLOB",
    "RasterInfo",
    "SkippedInput",
    "discover_inputs",
    "estimate_stretch",
    "ground_sample_distance",
    "open_raster_info",
    "read_rgb",
    "scan_inputs",
    "valid_pixels",
]

STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_MAX_PIXELS = 1024
PROBE_SIZE = 64


# -------------------------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class RasterInfo:
    """Validated facts about one input raster.

    ``path`` is a local ``Path`` or a :class:`~bldgseg.remote.RemotePath` (a URL); ``bands`` are the 1-based
    band numbers read as R, G, B; ``gsd_m`` is the ground sample distance in metres per pixel (mean of x and
    y); ``has_mask`` is True when nodata, alpha or an internal mask can make pixels invalid; ``stretch`` is the
    per-band ``(low, high)`` mapped to 0..255, or None for uint8 data; ``image_date`` (ISO 8601) and
    ``stac_item`` (its id) are set for a raster found through a STAC Item.
    """

    path: RasterPath
    crs: Any  # rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    bands: tuple[int, int, int]
    gsd_m: float
    has_mask: bool
    stretch: tuple[tuple[float, float], ...] | None
    image_date: str | None = None
    stac_item: str | None = None


def open_raster_info(path: str | os.PathLike[str], bands: Sequence[int] | None = None) -> RasterInfo:
    """Open ``path``, validate it and return its :class:`RasterInfo`.

    ``bands`` picks the three bands read as R, G, B (1-based; repeats allowed, e.g. ``(1, 1, 1)`` for a
    greyscale file). Raises :class:`InputError` (one line) for an unreadable, corrupt or truncated file, a
    missing CRS or geotransform, fewer than 3 bands without ``bands``, or a band number out of range.
    """
    path = as_raster_path(path)
    name = (path.name or str(path)) if isinstance(path, Path) else str(path)
    with http_env(path):
        return _open_and_describe(path, name, bands)


def _open_and_describe(path: RasterPath, name: str, bands: Sequence[int] | None) -> RasterInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(gdal_path(path))
    except RasterioError as exc:
        hint = (
            "check the URL and the credentials (GDAL's AWS_*/GS_*/GDAL_HTTP_* settings)"
            if not isinstance(path, Path)
            else "check that the file is complete and in a GDAL-readable format (e.g. run `gdalinfo` on it)"
        )
        raise InputError(f"{name}: cannot be opened as a raster ({one_line(exc)}); {hint}") from exc
    with dataset as ds:
        try:
            return _describe(ds, path, name, bands)
        except InputError:
            raise
        except (RasterioError, CRSError, ProjError) as exc:
            raise InputError(
                f"{name}: cannot be read ({one_line(exc)}); "
                "check the file with `gdalinfo -checksum` and re-export it"
            ) from exc


def _describe(ds: Any, path: RasterPath, name: str, bands: Sequence[int] | None) -> RasterInfo:
    """Validate an open dataset and build its RasterInfo."""
    if ds.width <= 0 or ds.height <= 0 or ds.count <= 0:
        raise InputError(
            f"{name}: has no pixels ({ds.count} bands of {ds.width}x{ds.height}); "
            "check the file with `gdalinfo`"
        )
    _probe_blocks(ds, name)
    _check_georeferencing(ds, path, name)
    selected = _select_bands(ds, name, bands)

    dtypes = {ds.dtypes[b - 1] for b in selected}
    dtype = str(np.result_type(*dtypes))
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        raise InputError(
            f"{name}: complex pixel type {dtype} is not supported; "
            "convert it to real-valued RGB first, e.g. with `gdal_translate -ot Float32`"
        )
    gsd = ground_sample_distance(ds.crs, ds.transform, ds.width, ds.height, name=name)
    has_mask = any(list(ds.mask_flag_enums[b - 1]) != [MaskFlags.all_valid] for b in selected)
    if np.issubdtype(np.dtype(dtype), np.floating):
        has_mask = True  # NaN pixels are always treated as invalid
    stretch = None if dtype == "uint8" else estimate_stretch(ds, selected)
    nodata = ds.nodatavals[selected[0] - 1]
    return RasterInfo(
        path=path,
        crs=ds.crs,
        transform=ds.transform,
        width=int(ds.width),
        height=int(ds.height),
        count=int(ds.count),
        dtype=dtype,
        nodata=None if nodata is None else float(nodata),
        bands=selected,
        gsd_m=gsd,
        has_mask=bool(has_mask),
        stretch=stretch,
    )


def _probe_blocks(ds: Any, name: str) -> None:
    """Cheap reads that fail on truncated or corrupt pixel data: a small overview and the last pixel."""
    try:
        ds.read(1, out_shape=(min(PROBE_SIZE, ds.height), min(PROBE_SIZE, ds.width)))
        ds.read(window=Window(ds.width - 1, ds.height - 1, 1, 1))
    except Exception as exc:  # any GDAL failure here means the pixel data is unusable
        raise InputError(
            f"{name}: pixel data cannot be read, the file is truncated or corrupt ({one_line(exc)}); "
            "copy or export the file again"
        ) from exc


def _check_georeferencing(ds: Any, path: RasterPath, name: str) -> None:
    """Require a CRS and a real (non-identity, invertible) geotransform."""
    has_crs = ds.crs is not None and bool(ds.crs)
    transform: Affine = ds.transform
    has_transform = not transform.is_identity and abs(transform.determinant) > 0
    if not has_transform:
        gcps, _gcp_crs = ds.gcps
        if gcps or ds.rpcs is not None:
            kind = "ground control points" if gcps else "RPCs"
            option = "" if gcps else "-rpc "
            raise InputError(
                f"{name}: is georeferenced only by {kind}, it has no geotransform; "
                f"warp it first with `gdalwarp {option}-t_srs EPSG:<code> {path} warped.tif`"
            )
        if not has_crs:
            raise InputError(
                f"{name}: is not georeferenced (no coordinate reference system and no geotransform); "
                f"assign both with `gdal_edit.py -a_srs EPSG:<code> -a_ullr ULX ULY LRX LRY {path}`"
            )
        raise InputError(
            f"{name}: has no geotransform (pixel to map coordinates); "
            f"assign one with `gdal_edit.py -a_ullr ULX ULY LRX LRY {path}`"
        )
    if not has_crs:
        raise InputError(
            f"{name}: has no coordinate reference system; "
            f"assign one with `gdal_edit.py -a_srs EPSG:<code> {path}`"
        )


def _select_bands(ds: Any, name: str, bands: Sequence[int] | None) -> tuple[int, int, int]:
    """The three 1-based bands read as RGB: ``bands`` if given, else the R/G/B colour bands or 1, 2, 3."""
    count = int(ds.count)
    if bands is None:
        if count < 3:
            raise InputError(
                f"{name}: expected 3 or more bands (RGB), found {count}; use --bands to choose them"
            )
        interp = [ci.name for ci in ds.colorinterp]
        if all(c in interp for c in ("red", "green", "blue")):
            return (interp.index("red") + 1, interp.index("green") + 1, interp.index("blue") + 1)
        return (1, 2, 3)
    chosen = tuple(bands)
    if len(chosen) != 3:
        raise InputError(
            f"{name}: --bands needs exactly 3 band numbers (R,G,B), got {len(chosen)}; "
            "pass e.g. --bands 1,2,3"
        )
    for band in chosen:
        if isinstance(band, bool) or not isinstance(band, (int, np.integer)) or not 1 <= band <= count:
            raise InputError(
                f"{name}: band {band} is out of range, the file has {count} band(s); "
                f"choose band numbers from 1 to {count} with --bands"
            )
    return (int(chosen[0]), int(chosen[1]), int(chosen[2]))


def scan_inputs(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    glob: str = DEFAULT_GLOB,
    bands: Sequence[int] | None = None,
) -> tuple[list[RasterInfo], list[SkippedInput]]:
    """Discover and validate inputs (:func:`bldgseg.discovery.resolve_inputs`); bad files, unreachable URLs and
    unusable STAC Items are collected as :class:`SkippedInput`, never raised.

    A local path that does not exist at all still raises :class:`InputError`.
    """
    refs, skipped = resolve_inputs(paths, glob)
    good: list[RasterInfo] = []
    for ref in refs:
        try:
            info = open_raster_info(ref.path, bands)
        except InputError as exc:
            skipped.append(SkippedInput(ref.path, str(exc)))
            continue
        good.append(replace(info, image_date=ref.image_date, stac_item=ref.stac_item))
    return good, skipped


# ------------------------------------------------------------------------------------------------- GSD


def ground_sample_distance(
    crs: Any, transform: Affine, width: int, height: int, *, name: str = "raster"
) -> float:
    """Ground metres per pixel at the raster centre (mean of the x and y pixel sizes).

    Projected CRSs: the pixel size in CRS units times the unit's metres, divided by the projection's
    parallel / meridional scale factors at the centre (so EPSG:3857 gives pixel size x cos(latitude)).
    Geographic CRSs: geodesic (WGS84) length of one pixel step at the centre. ``name`` labels errors.
    """
    try:
        pcrs = pyproj.CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(
            f"{name}: unusable coordinate reference system ({one_line(exc)}); "
            "assign a valid one with `gdal_edit.py -a_srs EPSG:<code> FILE`"
        ) from exc
    if pcrs.is_compound and pcrs.sub_crs_list:
        pcrs = pcrs.sub_crs_list[0]
    cx = transform.a * width / 2.0 + transform.b * height / 2.0 + transform.c
    cy = transform.d * width / 2.0 + transform.e * height / 2.0 + transform.f
    col_step = (transform.a, transform.d)  # CRS units per column
    row_step = (transform.b, transform.e)  # CRS units per row
    axes = pcrs.axis_info
    unit_factor = float(axes[0].unit_conversion_factor) if axes else 1.0

    if pcrs.is_geographic:
        to_deg = unit_factor * 180.0 / math.pi  # angular unit -> degrees
        geod = pyproj.Geod(ellps="WGS84")
        lon0, lat0 = cx * to_deg, cy * to_deg
        sizes = []
        for dx, dy in (col_step, row_step):
            lon1, lat1 = (cx + dx) * to_deg, (cy + dy) * to_deg
            if not (-90.0 <= lat0 <= 90.0 and -90.0 <= lat1 <= 90.0):
                raise InputError(
                    f"{name}: latitude outside -90..90 at the raster centre; check its CRS and geotransform"
                )
            _az1, _az2, dist = geod.inv(lon0, lat0, lon1, lat1)
            sizes.append(abs(dist))
        gsd = float(np.mean(sizes))
    elif pcrs.is_projected:
        geodetic = pcrs.geodetic_crs
        lon, lat = pyproj.Transformer.from_crs(pcrs, geodetic, always_xy=True).transform(cx, cy)
        factors = pyproj.Proj(pcrs).get_factors(lon, lat)
        k_parallel, h_meridional = float(factors.parallel_scale), float(factors.meridional_scale)
        scales_ok = all(math.isfinite(v) and v > 0 for v in (k_parallel, h_meridional))
        if not (scales_ok and math.isfinite(lon) and math.isfinite(lat)):
            raise InputError(
                f"{name}: the raster centre lies outside the domain of its projection; "
                "check its CRS and geotransform"
            )
        sizes = [
            math.hypot(dx / k_parallel, dy / h_meridional) * unit_factor for dx, dy in (col_step, row_step)
        ]
        gsd = float(np.mean(sizes))
    else:
        unit = axes[0].unit_name if axes else "unknown"
        if not axes or "metre" not in unit and "meter" not in unit and "foot" not in unit:
            raise InputError(
                f"{name}: cannot measure pixel size in CRS units '{unit}'; "
                "assign a projected or geographic CRS with `gdal_edit.py -a_srs EPSG:<code> FILE`"
            )
        gsd = float(np.mean([math.hypot(*col_step), math.hypot(*row_step)]) * unit_factor)
    if not math.isfinite(gsd) or gsd <= 0:
        raise InputError(f"{name}: pixel size is zero or undefined; check its geotransform with `gdalinfo`")
    return gsd


# ---------------------------------------------------------------------------------------------- pixels


def valid_pixels(masks: np.ndarray, data: np.ndarray | None = None) -> np.ndarray:
    """The valid-pixel rule: GDAL masks (nodata, alpha, internal mask) set and, for float data, finite values.

    ``masks`` and ``data`` are one band (H, W) or several (B, H, W) read alike (``read_masks`` / ``read``); the
    result is (H, W) bool, True where every band is valid. ``data`` may be left out for integer bands.
    """
    valid = np.asarray(masks) != 0
    if data is not None and np.asarray(data).dtype.kind in "fc":
        valid = valid & np.isfinite(data)
    return np.all(valid, axis=0) if valid.ndim == 3 else valid


def _decimated_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def estimate_stretch(dataset: Any, bands: Sequence[int]) -> tuple[tuple[float, float], ...]:
    """Per-band robust ``(low, high)`` = 2nd and 98th percentiles of the valid pixels.

    Computed on a decimated (nearest) read of at most ~1024x1024 pixels; nodata, masked and non-finite pixels
    are ignored. A band with no valid pixels gets its dtype's range (0..1 for floats); ``high > low`` always.
    """
    indexes = [int(b) for b in bands]
    oh, ow = _decimated_shape(int(dataset.height), int(dataset.width), STRETCH_MAX_PIXELS)
    shape = (len(indexes), oh, ow)
    data = dataset.read(indexes, out_shape=shape, resampling=Resampling.nearest)
    masks = dataset.read_masks(indexes, out_shape=shape, resampling=Resampling.nearest)
    result = []
    for band_data, band_mask in zip(data, masks, strict=True):
        values = band_data[valid_pixels(band_mask, band_data)]
        if values.size:
            low, high = (float(v) for v in np.percentile(values, STRETCH_PERCENTILES))
        elif band_data.dtype.kind in "iu":
            low, high = float(np.iinfo(band_data.dtype).min), float(np.iinfo(band_data.dtype).max)
        else:
            low, high = 0.0, 1.0
        if not high > low:
            high = low + 1.0
        result.append((low, high))
    return tuple(result)


def _int_window(window: Window) -> Window:
    return Window(
        int(round(window.col_off)),
        int(round(window.row_off)),
        int(round(window.width)),
        int(round(window.height)),
    )


def read_rgb(
    info: RasterInfo, window: Window, out_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (pixel offsets, may extend past the raster) as ``(rgb uint8[3,h,w], valid bool[h,w])``.

    Outside the raster is invalid. ``valid`` is True only where the masks (nodata, alpha, internal mask) of
    all three bands are set and, for float data, the values are finite. Non-uint8 data is stretched with
    ``info.stretch``. With ``out_shape=(h, w)`` the window is resampled (average when shrinking, bilinear
    when enlarging, nearest for the mask). Invalid pixels are 0 in ``rgb``.
    """
    win = _int_window(window)
    if win.width <= 0 or win.height <= 0:
        raise InputError(f"{info.path.name}: empty read window {win}; use a window with positive size")
    if out_shape is None:
        oh, ow = int(win.height), int(win.width)
    else:
        oh, ow = int(out_shape[0]), int(out_shape[1])
    if oh <= 0 or ow <= 0:
        raise InputError(f"{info.path.name}: out_shape {out_shape} is empty; use a positive (height, width)")
    rgb = np.zeros((3, oh, ow), dtype=np.uint8)
    valid = np.zeros((oh, ow), dtype=bool)

    row0, col0 = int(win.row_off), int(win.col_off)
    row1, col1 = row0 + int(win.height), col0 + int(win.width)
    if row1 <= 0 or col1 <= 0 or row0 >= info.height or col0 >= info.width:
        return rgb, valid  # entirely outside the raster
    inside = row0 >= 0 and col0 >= 0 and row1 <= info.height and col1 <= info.width

    if (oh, ow) == (win.height, win.width):
        resampling = Resampling.nearest
    elif oh * ow < win.height * win.width:
        resampling = Resampling.average
    else:
        resampling = Resampling.bilinear
    indexes = list(info.bands)
    shape = (3, oh, ow)
    try:
        with http_env(info.path), rasterio.open(gdal_path(info.path)) as ds:
            data = ds.read(
                indexes,
                window=win,
                out_shape=shape,
                resampling=resampling,
                boundless=not inside,
                out_dtype=info.dtype,
            )
            masks = None
            if not (inside and _all_valid(ds, indexes)):
                masks = ds.read_masks(
                    indexes, window=win, out_shape=shape, resampling=Resampling.nearest, boundless=not inside
                )
    except RasterioError as exc:
        raise InputError(
            f"{info.path.name}: reading window {win} failed ({one_line(exc)}); "
            "check the file with `gdalinfo -checksum` and re-export it"
        ) from exc

    valid = valid_pixels(np.full(shape[1:], 255, np.uint8) if masks is None else masks, data)
    if info.stretch is None and data.dtype == np.uint8:
        rgb = data
    else:
        stretch = info.stretch or tuple((0.0, 255.0) for _ in range(3))
        for i, (low, high) in enumerate(stretch):
            band = np.nan_to_num(data[i].astype(np.float32), nan=low, posinf=high, neginf=low)
            scaled = (band - np.float32(low)) * np.float32(255.0 / (high - low))
            rgb[i] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if masks is not None or not valid.all():
        rgb = np.where(valid[None], rgb, 0).astype(np.uint8, copy=False)
    return rgb, valid


def _all_valid(ds: Any, indexes: list[int]) -> bool:
    """Whether GDAL says every pixel of these bands is valid (no nodata, alpha or mask): no masks to read."""
    return all(MaskFlags.all_valid in ds.mask_flag_enums[i - 1] for i in indexes)
