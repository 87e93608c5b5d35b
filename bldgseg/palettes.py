"""Class-label conventions shared by training and street parsing: the ignore id and colour palettes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bldgseg.errors import InputError

__all__ = [
    "IGNORE_INDEX",
    "LABELMEFACADE_CLASSES",
    "LABELMEFACADE_GROUP_PATTERN",
    "LABELMEFACADE_PALETTE",
    "PALETTES",
    "Palette",
    "colours_to_classes",
    "palette_table",
]

#: Class id of pixels that carry no label (the loss ignores them; unknown colours map to it).
IGNORE_INDEX = 255

Palette = Mapping[tuple[int, int, int], int]

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

#: Named palettes (``bldgseg train --palette``): colours, class names and the photo grouping pattern.
PALETTES: dict[str, tuple[Palette, tuple[str, ...], str]] = {
    "labelmefacade": (LABELMEFACADE_PALETTE, LABELMEFACADE_CLASSES, LABELMEFACADE_GROUP_PATTERN)
}


def palette_table(palette: Palette, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Lookup table of ``palette``: sorted packed colour keys and their class ids (checked against the classes).

    Raises ``InputError`` for an empty palette, a colour that is not three 0..255 values, or a class id
    outside ``class_names`` (other than :data:`IGNORE_INDEX`).
    """
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


def colours_to_classes(rgb: np.ndarray, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Class ids (H, W uint8) of an (H, W, 3) uint8 colour label image; colours not in ``table`` give 255."""
    keys, ids = table
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    known = keys[pos] == packed
    return np.where(known, ids[pos], IGNORE_INDEX).astype(np.uint8)
