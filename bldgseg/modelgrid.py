"""A raster on the model's grid: its size at the model GSD, one layout of model windows, what a chunk needs.

Every pixel mapping here is a function of *global* pixel indices (of the raster and of its model grid) only, so a
chunk of the raster computes each model pixel, each window and each resampled value exactly as a run over the
whole raster does: the result cannot depend on how the raster was cut into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from bldgseg.errors import InputError
from bldgseg.tiling import WindowLayout, model_shape, plan_layout

__all__ = ["NATIVE_GSD_TOLERANCE", "AxisMap", "ChunkRegion", "ModelGrid", "Taps", "model_scale"]

#: A raster whose GSD is within this fraction of the model's runs on its own pixels: a 2 % scale change is well
#: inside the models' training augmentation, while resampling would cost a pass over every pixel both ways.
NATIVE_GSD_TOLERANCE = 0.02


def model_scale(source_gsd_m: float, model_gsd_m: float) -> float:
    """Source GSD / model GSD, or exactly 1 within :data:`NATIVE_GSD_TOLERANCE` (no resampling)."""
    scale = source_gsd_m / model_gsd_m
    return 1.0 if abs(scale - 1.0) <= NATIVE_GSD_TOLERANCE else scale


@dataclass(frozen=True)
class Taps:
    """Resampling along one axis: output pixel ``i`` is ``sum_t weight[i, t] * input[index[i, t]]``.

    ``index`` holds global input pixels (int64, n x K), ``weight`` float32 (n x K); ``identity`` marks a 1:1
    axis (then ``index[:, 0]`` are the pixels and every weight is 1).
    """

    index: np.ndarray
    weight: np.ndarray
    identity: bool = False

    def span(self) -> tuple[int, int]:
        """The half-open range of input pixels the taps read."""
        return int(self.index.min()), int(self.index.max()) + 1


@dataclass(frozen=True)
class AxisMap:
    """One axis of a raster (``source`` pixels) and of its model grid (``model`` pixels), same extent."""

    source: int
    model: int

    def to_model(self, start: int, stop: int) -> Taps:
        """Taps giving model pixels ``[start, stop)`` from source pixels.

        Shrinking: the area average of the source pixels under the model pixel (fractional edges weighted).
        Enlarging: linear interpolation at the model pixel centre. Equal sizes: the pixels themselves.
        """
        if self.model == self.source:
            return _identity(start, stop)
        if self.model > self.source:
            return _linear(start, stop, n_in=self.source, n_out=self.model)
        return _area(start, stop, n_in=self.source, n_out=self.model)

    def to_source(self, start: int, stop: int) -> Taps:
        """Taps giving source pixels ``[start, stop)`` from model pixels: linear interpolation at the source
        pixel centre, clamped at the raster's edges only (``align_corners=False`` semantics)."""
        if self.model == self.source:
            return _identity(start, stop)
        return _linear(start, stop, n_in=self.model, n_out=self.source)

    def nearest_source(self, start: int, stop: int) -> np.ndarray:
        """The source pixel under the centre of each model pixel ``[start, stop)`` (int64)."""
        j = np.arange(start, stop, dtype=np.int64)
        return (2 * j + 1) * self.source // (2 * self.model)

    def nearest_model(self, start: int, stop: int) -> np.ndarray:
        """The model pixel under the centre of each source pixel ``[start, stop)`` (int64)."""
        x = np.arange(start, stop, dtype=np.int64)
        return (2 * x + 1) * self.model // (2 * self.source)


def _identity(start: int, stop: int) -> Taps:
    index = np.arange(start, stop, dtype=np.int64)[:, None]
    return Taps(index, np.ones(index.shape, np.float32), identity=True)


def _linear(start: int, stop: int, n_in: int, n_out: int) -> Taps:
    """Two-tap linear interpolation at output pixel centres: u = (j + 0.5) * n_in / n_out - 0.5, clamped."""
    j = np.arange(start, stop, dtype=np.int64)
    u = np.maximum(((2 * j + 1) * n_in - n_out) / (2.0 * n_out), 0.0)
    lower = np.floor(u).astype(np.int64)
    frac = (u - lower).astype(np.float32)
    upper = np.minimum(lower + 1, n_in - 1)
    lower = np.minimum(lower, n_in - 1)
    return Taps(np.stack([lower, upper], 1), np.stack([1 - frac, frac], 1))


def _area(start: int, stop: int, n_in: int, n_out: int) -> Taps:
    """Area weights of the input pixels under output pixel j = [j * n_in / n_out, (j + 1) * n_in / n_out)."""
    j = np.arange(start, stop, dtype=np.int64)
    low, high = (j * n_in) / n_out, ((j + 1) * n_in) / n_out
    taps = -(-n_in // n_out) + 1
    index = np.floor(low).astype(np.int64)[:, None] + np.arange(taps)[None]
    weight = np.minimum(index + 1, high[:, None]) - np.maximum(index, low[:, None])
    weight = np.clip(weight, 0.0, None).astype(np.float32)
    return Taps(np.minimum(index, n_in - 1), weight)


@dataclass(frozen=True)
class ChunkRegion:
    """What one chunk predicts: ``model`` is the window of the model grid it runs (the union of every model
    window that touches the model pixels its ``read`` window is resampled from), ``layout`` those windows in
    ``model``'s own pixels, in the raster's order."""

    read: Window
    model: Window
    layout: WindowLayout


@dataclass(frozen=True)
class ModelGrid:
    """A raster at the model's GSD: ``rows`` and ``cols`` map its pixels to the model grid, ``layout`` holds
    the model windows of the whole raster (its small-image and edge rules applied once, to the raster)."""

    rows: AxisMap
    cols: AxisMap
    layout: WindowLayout

    @classmethod
    def for_raster(cls, height: int, width: int, scale: float, tile_size: int, overlap: int) -> ModelGrid:
        """The grid of a ``height`` x ``width`` raster resampled by ``scale`` (source GSD / model GSD)."""
        model_h, model_w = model_shape((height, width), scale)
        return cls(
            AxisMap(int(height), model_h),
            AxisMap(int(width), model_w),
            plan_layout(model_h, model_w, tile_size, overlap),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the raster on the model grid."""
        return self.rows.model, self.cols.model

    @property
    def identity(self) -> bool:
        """True when the model grid is the raster's own grid (no resampling)."""
        return self.rows.model == self.rows.source and self.cols.model == self.cols.source

    def source_window(self, model: Window) -> Window:
        """The source pixels read to make the model pixels of ``model`` (:meth:`AxisMap.to_model` taps)."""
        r0, r1 = self.rows.to_model(int(model.row_off), int(model.row_off + model.height)).span()
        c0, c1 = self.cols.to_model(int(model.col_off), int(model.col_off + model.width)).span()
        return Window(c0, r0, c1 - c0, r1 - r0)

    def chunk_region(self, read: Window) -> ChunkRegion:
        """The model region and windows a chunk with source window ``read`` must run to get, on ``read``, the
        maps of a whole-raster run: every window touching the model pixels ``read`` is interpolated from.
        The region grows by less than one window on each side of those pixels."""
        r0, c0 = int(read.row_off), int(read.col_off)
        r1, c1 = r0 + int(read.height), c0 + int(read.width)
        if not (0 <= r0 < r1 <= self.rows.source and 0 <= c0 < c1 <= self.cols.source):
            raise InputError(
                f"chunk window {read} lies outside the raster of {self.cols.source}x{self.rows.source} "
                "pixels; plan chunks with bldgseg.tiling.plan_chunks"
            )
        need_rows = self.rows.to_source(r0, r1).span()
        need_cols = self.cols.to_source(c0, c1).span()
        layout = self.layout.touching(need_rows, need_cols)
        m_r0, m_r1, m_c0, m_c1 = layout.extent()
        m_r1, m_c1 = min(m_r1, self.rows.model), min(m_c1, self.cols.model)
        model = Window(m_c0, m_r0, m_c1 - m_c0, m_r1 - m_r0)
        return ChunkRegion(Window(c0, r0, c1 - c0, r1 - r0), model, layout.shifted(m_r0, m_c0))
