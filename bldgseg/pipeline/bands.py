"""A large unit's buildings measured in row bands at once, all but the first in helper processes.

After the model, a unit's work (vectorizing, post-processing, per-building attributes) is Python that mostly
holds the GIL: two threads are no faster than one (4 units of a 4096² raster from cached probabilities: 3.4-3.7 s
with one unit thread or two, docs/benchmarks.md). On a machine with spare cores, a unit's core is cut into row
bands; each band is processed from its own window (the band grown by the halo, as a chunk is:
:mod:`bldgseg.pipeline.plan`), the first here and the others in helper processes started with the run, so that
their imports overlap the model. A building belongs to the band whose core holds its representative point, as
it belongs to one chunk, so the buildings are those of the unit in one piece (only their order within the unit
differs). If a helper dies, its bands are measured in place and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.windows import Window

from bldgseg.band_helpers import HelperGone, Helpers, running_helpers
from bldgseg.io import RasterInfo
from bldgseg.mosaic import MosaicTile
from bldgseg.pipeline.config import UnitSettings
from bldgseg.pipeline.measure import buildings_in_window
from bldgseg.pipeline.plan import WorkUnit, halo_pixels

__all__ = ["MIN_BAND_PIXELS", "measure_unit", "row_bands", "units_in_bands"]

log = logging.getLogger(__name__)

#: Smallest band core worth sending to the helper (pixels): below it the copy and the halo cost more than
#: they save.
MIN_BAND_PIXELS = 2**21


def row_bands(read: Window, core: Window, halo: int, most: int = 2) -> list[tuple[Window, Window]] | None:
    """The (read, core) windows of up to ``most`` row bands of a unit, or None when two would be too small.

    The core's rows are cut into nearly equal bands of at least ``2 * halo`` rows and :data:`MIN_BAND_PIXELS`
    pixels; each band reads its core rows plus ``halo`` rows on each inner side (clipped to the unit's read
    window), all of the unit's read columns.
    """
    r0, r1 = int(core.row_off), int(core.row_off + core.height)
    count = int(most)
    while count >= 2:
        rows = (r1 - r0) // count
        if rows >= 2 * halo and rows * int(core.width) >= MIN_BAND_PIXELS:
            break
        count -= 1
    if count < 2:
        return None
    edges = [r0 + round(i * (r1 - r0) / count) for i in range(count + 1)]
    top, bottom = int(read.row_off), int(read.row_off + read.height)
    bands = []
    for i, (c0, c1) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        w0 = top if i == 0 else max(top, c0 - halo)
        w1 = bottom if i == count - 1 else min(bottom, c1 + halo)
        bands.append((Window(read.col_off, w0, read.width, w1 - w0), Window(core.col_off, c0, core.width, c1 - c0)))
    return bands


def units_in_bands(units: Sequence[WorkUnit], settings: UnitSettings) -> int:
    """How many of ``units`` are large enough to be measured in row bands (helpers are started only for them)."""
    if settings.instances or not settings.vectorize:
        return 0
    return sum(_unit_bands(u.info, u.chunk.read, u.chunk.core, settings) is not None for u in units)


def _unit_bands(
    info: RasterInfo, read: Window, core: Window, settings: UnitSettings, helpers: int | None = None
) -> list[tuple[Window, Window]] | None:
    """:func:`row_bands` of a unit with the run's halo, for ``settings.post_processes`` helpers (or fewer)."""
    count = settings.post_processes if helpers is None else min(settings.post_processes, helpers)
    if count <= 0:
        return None
    return row_bands(read, core, halo_pixels(info, settings.max_building_size_m), 1 + count)


def measure_unit(
    prob: np.ndarray,
    labels: np.ndarray | None,
    info: RasterInfo,
    read: Window,
    core: Window,
    settings: UnitSettings,
    model_name: str,
    tiles: Sequence[MosaicTile] = (),
) -> gpd.GeoDataFrame:
    """The unit's measured buildings (:func:`buildings_in_window`), in row bands when helpers can take some.

    The first band is measured here, the others by the helper processes meanwhile. Instance labels are
    measured in one piece (their ids span the whole window).
    """
    helpers = running_helpers()
    bands = None
    if helpers is not None and labels is None:
        bands = _unit_bands(info, read, core, settings, helpers.count)
    if bands is None:
        return buildings_in_window(prob, labels, info, read, core, settings, model_name, tiles)
    sent = []
    for band_read, band_core in bands[1:]:
        args = (np.ascontiguousarray(_rows(prob, read, band_read)), None, info, band_read, band_core, settings,
                model_name, tuple(tiles))  # fmt: skip
        sent.append((helpers.submit(args), args))
    first_read, first_core = bands[0]
    parts = [buildings_in_window(_rows(prob, read, first_read), None, info, first_read, first_core, settings,
                                 model_name, tiles)]  # fmt: skip
    parts += [_result(helpers, future, args) for future, args in sent]
    return pd.concat(parts, ignore_index=True)


def _rows(prob: np.ndarray, read: Window, band: Window) -> np.ndarray:
    start = int(band.row_off - read.row_off)
    return prob[start : start + int(band.height)]


def _result(helpers: Helpers, future: Future, args: tuple) -> gpd.GeoDataFrame:
    """A helper's band, or the band measured here when its helper died."""
    try:
        return future.result()
    except HelperGone as exc:
        if not helpers.warned:
            helpers.warned = True
            log.warning("a band helper process stopped (%s); measuring its bands here", exc)
    return buildings_in_window(*args)
