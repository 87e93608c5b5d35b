"""The validation part as rasters the pipeline can run on: whole files where it is, crops (GeoTIFF) elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

from bldgseg.train.data import TrainSample

__all__ = ["held_out_windows", "validation_rasters", "write_crop"]


def held_out_windows(samples: Sequence[TrainSample]) -> dict[tuple[str, str], Window]:
    """``(raster path, group)`` -> the window (source pixels) covering that group's validation samples."""
    boxes: dict[tuple[str, str], list[int]] = {}
    for sample in samples:
        origin = sample.origin
        if origin is None:
            continue
        c0, r0 = origin.col_off, origin.row_off
        c1, r1 = c0 + origin.width, r0 + origin.height
        box = boxes.setdefault((origin.path, sample.group), [c0, r0, c1, r1])
        box[:] = [min(box[0], c0), min(box[1], r0), max(box[2], c1), max(box[3], r1)]
    return {key: Window(c0, r0, c1 - c0, r1 - r0) for key, (c0, r0, c1, r1) in boxes.items()}


def write_crop(source: Path, window: Window, dest: Path) -> Path:
    """``window`` of ``source`` as a GeoTIFF: all bands, nodata, alpha and internal mask kept."""
    with rasterio.open(source) as src:
        profile = {
            "driver": "GTiff",
            "width": int(window.width),
            "height": int(window.height),
            "count": src.count,
            "dtype": src.dtypes[0],
            "crs": src.crs,
            "transform": src.window_transform(window),
            "nodata": src.nodata,
            "compress": "deflate",
        }
        data = src.read(window=window)
        per_dataset = all(
            MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags for flags in src.mask_flag_enums
        )
        mask = src.dataset_mask(window=window) if per_dataset else None
        colors = src.colorinterp
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(dest, "w", **profile) as dst:
        dst.write(data)
        if ColorInterp.alpha in colors:
            dst.colorinterp = colors
        if mask is not None:
            dst.write_mask(mask)
    return dest


def validation_rasters(samples: Sequence[TrainSample], folder: Path) -> list[Path]:
    """Rasters covering the validation samples: a file held out whole is used as it is, else cropped into
    ``folder`` (``<n>_<stem>_r<row>_c<col>.tif``). Sorted by path."""
    out: list[Path] = []
    for n, ((path, _group), window) in enumerate(sorted(held_out_windows(samples).items())):
        source = Path(path)
        with rasterio.open(source) as src:
            size = (src.width, src.height)
        if (window.col_off, window.row_off, window.width, window.height) == (0, 0, *size):
            out.append(source)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{n:03d}_{source.stem}_r{int(window.row_off)}_c{int(window.col_off)}.tif"
        out.append(write_crop(source, window, folder / name))
    return sorted(out)
