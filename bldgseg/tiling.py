"""Work units and model windows: chunks (core + halo) of a raster and overlapping tiles of an array.

All windows use integer pixel offsets and sizes (``rasterio.windows.Window``, ``col_off, row_off, width,
height``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from bldgseg.errors import InputError

__all__ = [
    "Chunk",
    "WindowLayout",
    "iter_windows",
    "model_shape",
    "plan_chunks",
    "plan_layout",
    "skip_empty",
]

#: Input sizes must be multiples of this for the registry's encoders (five 2x downsamplings).
NETWORK_STRIDE = 32


def _offsets(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of full tiles along one axis; the last one ends exactly at ``size``."""
    if size <= tile:
        return [0]
    offsets = list(range(0, size - tile + 1, stride))
    if offsets[-1] != size - tile:
        offsets.append(size - tile)
    return offsets


def iter_windows(height: int, width: int, tile_size: int, overlap: int) -> list[Window]:
    """Full-size ``tile_size`` windows covering a ``height`` x ``width`` array, row-major.

    The stride is ``tile_size - overlap`` (must be > 0); the last row/column of windows is shifted back to
    end exactly at the array edge. In a dimension smaller than ``tile_size`` there is one window starting at
    0 that extends past the array: the caller pads (and marks the padding invalid).
    """
    rows, cols = _window_offsets(height, width, tile_size, overlap)
    return [Window(col, row, tile_size, tile_size) for row in rows for col in cols]


def _window_offsets(height: int, width: int, tile_size: int, overlap: int) -> tuple[list[int], list[int]]:
    """Row and column offsets of :func:`iter_windows`' windows (its arguments checked)."""
    if height <= 0 or width <= 0:
        raise InputError(f"array of {height}x{width} pixels is empty; pass a positive height and width")
    if tile_size <= 0 or overlap < 0:
        raise InputError(
            f"tile size {tile_size} / overlap {overlap} are invalid; use tile_size > 0 and overlap >= 0"
        )
    stride = tile_size - overlap
    if stride <= 0:
        raise InputError(
            f"tile stride (tile_size {tile_size} - overlap {overlap}) must be > 0; "
            "use an overlap smaller than the tile size"
        )
    return _offsets(height, tile_size, stride), _offsets(width, tile_size, stride)


@dataclass(frozen=True)
class WindowLayout:
    """Model windows of ``tile`` pixels at every (row, col) of ``rows`` x ``cols``, in row-major order.

    Offsets are in the pixels of the array the layout belongs to; windows may extend past its bottom/right
    edge (the caller pads). A layout and any part of it keep the order of the whole, so windows are always
    run (and ties between them resolved) in the same order.
    """

    tile: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    def windows(self) -> list[Window]:
        """The windows, row-major."""
        return [Window(c, r, self.tile, self.tile) for r in self.rows for c in self.cols]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def touching(self, rows: tuple[int, int], cols: tuple[int, int]) -> WindowLayout:
        """The windows that overlap the half-open pixel ranges ``rows`` x ``cols`` (order kept)."""
        return WindowLayout(
            self.tile,
            tuple(r for r in self.rows if r < rows[1] and r + self.tile > rows[0]),
            tuple(c for c in self.cols if c < cols[1] and c + self.tile > cols[0]),
        )

    def shifted(self, row: int, col: int) -> WindowLayout:
        """The same windows in the pixels of an array whose origin lies at (``row``, ``col``) of this one."""
        return WindowLayout(self.tile, tuple(r - row for r in self.rows), tuple(c - col for c in self.cols))

    def extent(self) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)``: the half-open bounding box of all windows."""
        if not self.rows or not self.cols:
            raise InputError("an empty window layout has no extent; select at least one window")
        return self.rows[0], self.rows[-1] + self.tile, self.cols[0], self.cols[-1] + self.tile


def plan_layout(height: int, width: int, tile_size: int, overlap: int) -> WindowLayout:
    """The model windows over a whole ``height`` x ``width`` array (a raster at the model's GSD).

    Full ``tile_size`` windows as :func:`iter_windows` places them; an array smaller than a window in *both*
    directions is one window of its own size, rounded up to :data:`NETWORK_STRIDE` (the model sees it as it
    saw its training crops). In a dimension smaller than the window there is one window starting at 0.
    """
    if 0 < height < tile_size and 0 < width < tile_size:
        tile = min(tile_size, NETWORK_STRIDE * math.ceil(max(height, width) / NETWORK_STRIDE))
        return WindowLayout(tile, (0,), (0,))
    rows, cols = _window_offsets(height, width, tile_size, overlap)
    return WindowLayout(tile_size, tuple(rows), tuple(cols))


@dataclass(frozen=True)
class Chunk:
    """A work unit: ``core`` (owned pixels; cores tile the raster) and ``read`` (core + halo, clipped)."""

    core: Window
    read: Window

    @property
    def core_in_read(self) -> Window:
        """The core's position inside the array read for ``read``."""
        return Window(
            int(self.core.col_off - self.read.col_off),
            int(self.core.row_off - self.read.row_off),
            int(self.core.width),
            int(self.core.height),
        )


def plan_chunks(height: int, width: int, chunk_size: int, halo: int) -> list[Chunk]:
    """Split a ``height`` x ``width`` raster into chunks, row-major.

    Cores are ``chunk_size`` squares (smaller along the last row/column) that tile the raster with no overlap
    and no gap; each read window is its core grown by ``halo`` on every side and clipped to the raster.
    """
    if height <= 0 or width <= 0:
        raise InputError(f"raster of {height}x{width} pixels is empty; pass a positive height and width")
    if chunk_size <= 0:
        raise InputError(f"chunk size {chunk_size} is invalid; use a chunk size > 0")
    if halo < 0:
        raise InputError(f"halo {halo} is invalid; use a halo >= 0")
    chunks: list[Chunk] = []
    for row in range(0, height, chunk_size):
        core_h = min(chunk_size, height - row)
        read_r0, read_r1 = max(0, row - halo), min(height, row + core_h + halo)
        for col in range(0, width, chunk_size):
            core_w = min(chunk_size, width - col)
            read_c0, read_c1 = max(0, col - halo), min(width, col + core_w + halo)
            chunks.append(
                Chunk(
                    core=Window(col, row, core_w, core_h),
                    read=Window(read_c0, read_r0, read_c1 - read_c0, read_r1 - read_r0),
                )
            )
    return chunks


def model_shape(window_or_hw: Window | tuple[int, int], scale: float) -> tuple[int, int]:
    """Size ``(h, w)`` of a window (or ``(h, w)``) after resampling by ``scale``: rounded, at least 1.

    ``scale`` is source GSD / model GSD (e.g. 0.15 m imagery for a 0.3 m model gives 0.5).
    """
    if not scale > 0:
        raise InputError(
            f"resampling scale {scale} is invalid; use a positive scale (source GSD / model GSD)"
        )
    if isinstance(window_or_hw, Window):
        h, w = float(window_or_hw.height), float(window_or_hw.width)
    else:
        h, w = (float(v) for v in window_or_hw)
    return max(1, round(h * scale)), max(1, round(w * scale))


def skip_empty(windows: Iterable[Window], valid: np.ndarray) -> list[Window]:
    """The windows (in order) that contain at least one True pixel of ``valid`` (bool[H, W]).

    Windows may extend past the array; only the part inside is inspected.
    """
    height, width = valid.shape[-2:]
    kept: list[Window] = []
    for win in windows:
        r0, c0 = max(0, int(win.row_off)), max(0, int(win.col_off))
        r1 = min(height, int(win.row_off) + int(win.height))
        c1 = min(width, int(win.col_off) + int(win.width))
        if r1 > r0 and c1 > c0 and valid[..., r0:r1, c0:c1].any():
            kept.append(win)
    return kept
