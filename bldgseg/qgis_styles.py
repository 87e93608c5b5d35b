"""QGIS styles (QML) shipped with bldgseg: buildings coloured by confidence, plain footprints, probability maps."""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from bldgseg.files import atomic_write

__all__ = [
    "building_style",
    "footprint_style",
    "probability_style",
    "style_for_columns",
    "write_probability_style",
]


def _qml(name: str) -> str:
    return resources.files("bldgseg").joinpath("styles", f"{name}.qml").read_text(encoding="utf-8")


def building_style() -> str:
    """Buildings graduated by ``confidence`` in five fixed classes (red < 0.6 … green 0.9–1.0), labelled fields
    (aliases with units, rounded numbers), a display expression and a map tip with area, height, confidence."""
    return _qml("buildings")


def footprint_style() -> str:
    """Footprints without ``confidence`` (e.g. ``bldgseg attributes``): one orange fill, the same field labels."""
    return _qml("footprints")


def style_for_columns(columns: Iterable[str]) -> str:
    """:func:`building_style` when the layer has a ``confidence`` column, else :func:`footprint_style`."""
    return building_style() if "confidence" in set(columns) else footprint_style()


def probability_style() -> str:
    """A probability map (uint8, probability x 255): transparent below 0.1, then yellow to red up to 1."""
    return _qml("probability")


def write_probability_style(raster: str | os.PathLike[str]) -> Path:
    """Write :func:`probability_style` as ``<raster stem>.qml`` next to ``raster``: the file QGIS reads as the
    raster's default style when it opens it. Replaces an older sidecar; returns its path."""
    raster = Path(raster)
    dest = raster.with_suffix(".qml")
    with atomic_write(dest, ".qml", sync=False) as tmp:
        tmp.write_text(probability_style(), encoding="utf-8")
    return dest
