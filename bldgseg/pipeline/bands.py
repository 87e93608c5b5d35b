"""A large unit's buildings measured in two row bands at once, the lower one in a helper process.

After the model, a unit's work (vectorizing, post-processing, per-building attributes) is Python that mostly
holds the GIL: two threads are no faster than one (4 units of a 4096² raster from cached probabilities: 3.4-3.7 s
with one unit thread or two, docs/benchmarks.md). On a machine with a spare core, a unit's core is cut into an
upper and a lower row band; each band is processed from its own window (the band grown by the halo, as a chunk
is: :mod:`bldgseg.pipeline.plan`), the lower one in a helper process started with the run, so that its imports
overlap the model. A building belongs to the band whose core holds its representative point, as it belongs to
one chunk, so the buildings are those of the unit in one piece (only their order within the unit differs). If
the helper dies, its band is measured in place and the run goes on.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.windows import Window

from bldgseg.io import RasterInfo
from bldgseg.mosaic import MosaicTile
from bldgseg.pipeline.config import UnitSettings
from bldgseg.pipeline.measure import buildings_in_window
from bldgseg.pipeline.plan import halo_pixels

__all__ = ["MIN_BAND_PIXELS", "measure_unit", "row_bands", "start_helper", "stop_helper"]

log = logging.getLogger(__name__)

#: Smallest band core worth sending to the helper (pixels): below it the copy and the halo cost more than
#: they save.
MIN_BAND_PIXELS = 2**21

#: The module the helper process runs (``python -m``).
WORKER_MODULE = "bldgseg.pipeline.band_worker"

_helper: _Helper | None = None
_helper_lock = threading.Lock()


class HelperGone(RuntimeError):
    """The helper process exited or its pipe broke."""


class _Helper:
    """One ``python -m bldgseg.pipeline.band_worker`` process; one request at a time, sent from a thread."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.sender = ThreadPoolExecutor(1, thread_name_prefix="bldgseg-band")
        self.lock = threading.Lock()

    def submit(self, args: tuple) -> Future:
        return self.sender.submit(self._call, args)

    def _call(self, args: tuple) -> gpd.GeoDataFrame:
        with self.lock:
            try:
                pickle.dump(args, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.process.stdin.flush()
                status, value = pickle.load(self.process.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                raise HelperGone(f"exit code {self.process.poll()}: {type(exc).__name__}") from exc
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        self.sender.shutdown(wait=True)
        try:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


def start_helper() -> None:
    """Start the helper process now; it imports while the first unit is on the model."""
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = _Helper()


def stop_helper() -> None:
    """Stop the helper process (at the end of a run); the next run starts a new one."""
    global _helper
    with _helper_lock:
        helper, _helper = _helper, None
    if helper is not None:
        helper.close()


def row_bands(read: Window, core: Window, halo: int) -> list[tuple[Window, Window]] | None:
    """The (read, core) windows of the upper and lower row band of a unit, or None when it is too small.

    The core's rows are cut in half; each band reads its core rows plus ``halo`` rows on the inner side
    (clipped to the unit's read window), all of the unit's read columns.
    """
    r0, r1 = int(core.row_off), int(core.row_off + core.height)
    mid = (r0 + r1) // 2
    if min(mid - r0, r1 - mid) < 2 * halo or (mid - r0) * int(core.width) < MIN_BAND_PIXELS:
        return None
    top, bottom = int(read.row_off), int(read.row_off + read.height)
    bands = []
    for c0, c1, w0, w1 in ((r0, mid, top, min(bottom, mid + halo)), (mid, r1, max(top, mid - halo), bottom)):
        bands.append(
            (
                Window(read.col_off, w0, read.width, w1 - w0),
                Window(core.col_off, c0, core.width, c1 - c0),
            )
        )
    return bands


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
    """The unit's measured buildings (:func:`buildings_in_window`), in two bands when a helper can take one.

    Instance labels are measured in one piece (their ids span the whole window).
    """
    bands = None
    if settings.post_processes > 0 and labels is None:
        bands = row_bands(read, core, halo_pixels(info, settings.max_building_size_m))
    if bands is None:
        return buildings_in_window(prob, labels, info, read, core, settings, model_name, tiles)
    (upper_read, upper_core), (lower_read, lower_core) = bands
    lower_prob = np.ascontiguousarray(_rows(prob, read, lower_read))
    lower_args = (lower_prob, None, info, lower_read, lower_core, settings, model_name, tuple(tiles))
    future = _submit(lower_args)
    upper = buildings_in_window(_rows(prob, read, upper_read), None, info, upper_read, upper_core, settings,
                                model_name, tiles)  # fmt: skip
    lower = _result(future, lower_args)
    return pd.concat([upper, lower], ignore_index=True)


def _rows(prob: np.ndarray, read: Window, band: Window) -> np.ndarray:
    start = int(band.row_off - read.row_off)
    return prob[start : start + int(band.height)]


def _submit(args: tuple) -> Future | None:
    with _helper_lock:
        helper = _helper
    if helper is None:
        return None
    try:
        return helper.submit(args)
    except RuntimeError:  # shut down by another thread
        return None


def _result(future: Future | None, args: tuple) -> gpd.GeoDataFrame:
    """The helper's band, or the band measured here when there is no helper or it died."""
    if future is not None:
        try:
            return future.result()
        except HelperGone as exc:
            log.warning("the band helper process stopped (%s); measuring its bands here", exc)
            _drop_helper()
    return buildings_in_window(*args)


def _drop_helper() -> None:
    global _helper
    with _helper_lock:
        helper, _helper = _helper, None
    if helper is not None:
        helper.process.kill()
        helper.close()
