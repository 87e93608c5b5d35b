"""Training samples from image files paired by name: image/mask pairs and image/colour-label pairs.

Every loader returns a :class:`~bldgseg.train.data.SampleList` (a plain ``list`` of ``TrainSample`` with a
``skipped`` attribute listing inputs that were left out and why). Samples are held in memory at the target
ground sample distance; mask value ``IGNORE_INDEX`` (255) marks pixels the loss must ignore (outside the
raster's valid area, unknown label colours). ``group`` is the geographic unit used by
:func:`bldgseg.train.split.geographic_split`. Rasters with vector footprints are loaded by
:mod:`bldgseg.train.footprint_samples`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from bldgseg.errors import InputError, one_line
from bldgseg.io import SkippedInput, open_raster_info, read_rgb
from bldgseg.palettes import IGNORE_INDEX, colours_to_classes, palette_table
from bldgseg.train.data import SampleList, TrainSample
from bldgseg.train.resample import bounds_4326, check_gsd, resize_binary_mask, resize_image, scale_factor

__all__ = ["IMAGE_SUFFIXES", "load_mask_pairs", "load_palette_pairs"]

#: File types read by the pair loaders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Mask file stems may end with one of these after the image stem (``a.png`` <- ``a.mask.png``, ``a_mask.png``).
MASK_STEM_SUFFIXES = (".mask", "_mask")


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
            f"{path.name}: cannot be opened ({one_line(exc)}); check that the file is complete"
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
                f"{path.name}: cannot be read as a mask ({one_line(exc)}); export it again"
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
    target = check_gsd(target_gsd, "target_gsd")
    source = check_gsd(source_gsd, "source_gsd")
    pattern = _compile(group_pattern)
    pairs, skipped = _match_pairs(images, masks, "mask")
    samples = SampleList(skipped=skipped)
    for image_path, mask_path in pairs:
        raw_mask = _read_single_band(mask_path)
        bounds = None
        if _is_georeferenced(image_path):
            info = open_raster_info(image_path)
            _check_same_shape(image_path, mask_path, (info.height, info.width), raw_mask.shape)
            factor = scale_factor(info.gsd_m, target)
            out_hw = (max(1, round(info.height * factor)), max(1, round(info.width * factor)))
            rgb, valid = read_rgb(info, Window(0, 0, info.width, info.height), out_shape=out_hw)
            image = np.ascontiguousarray(rgb.transpose(1, 2, 0))
            mask = resize_binary_mask(_binary_mask(raw_mask, mask_path.name), out_hw)
            mask[~valid] = IGNORE_INDEX
            bounds = bounds_4326(info.crs, info.transform, info.height, info.width)
        else:
            if target is not None and source is None:
                raise InputError(
                    f"{image_path.name}: has no georeferencing, so its ground pixel size is unknown; "
                    f"pass source_gsd (metres per pixel) to resample it to target_gsd={target}"
                )
            image = _read_photo(image_path)
            _check_same_shape(image_path, mask_path, image.shape[:2], raw_mask.shape)
            mask = _binary_mask(raw_mask, mask_path.name)
            factor = scale_factor(source, target) if source is not None else 1.0
            if factor != 1.0:
                h, w = mask.shape
                out_hw = (max(1, round(h * factor)), max(1, round(w * factor)))
                image = resize_image(image, out_hw)
                mask = resize_binary_mask(mask, out_hw)
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
    table = palette_table(palette, class_names)
    pattern = _compile(group_pattern)
    pairs, skipped = _match_pairs(images, labels, "label")
    samples = SampleList(skipped=skipped)
    for image_path, label_path in pairs:
        image = _read_photo(image_path)
        rgb, transparent = _read_colour_label(label_path)
        _check_same_shape(image_path, label_path, image.shape[:2], rgb.shape[:2])
        mask = colours_to_classes(rgb, table)
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
