"""Tests for bldgseg.tiling: model windows, chunk plans, model shapes and empty-window skipping."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from bldgseg.errors import InputError
from bldgseg.tiling import (
    Chunk,
    WindowLayout,
    iter_windows,
    model_shape,
    plan_chunks,
    plan_layout,
    skip_empty,
)


def coverage(height: int, width: int, windows: list[Window]) -> np.ndarray:
    counts = np.zeros((height, width), dtype=int)
    for w in windows:
        counts[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    return counts


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(1000, 700, 256, 32), (512, 512, 256, 0), (513, 257, 256, 64), (300, 1000, 128, 120)],
)
def test_iter_windows_cover_and_stay_inside(height: int, width: int, tile: int, overlap: int) -> None:
    windows = iter_windows(height, width, tile, overlap)
    assert coverage(height, width, windows).min() >= 1
    for w in windows:
        assert (w.width, w.height) == (tile, tile)
        assert w.row_off >= 0 and w.row_off + w.height <= height
        assert w.col_off >= 0 and w.col_off + w.width <= width
        assert all(isinstance(v, int) for v in (w.col_off, w.row_off, w.width, w.height))
    rows = sorted({w.row_off for w in windows})
    cols = sorted({w.col_off for w in windows})
    assert rows[-1] + tile == height and cols[-1] + tile == width
    # Regular stride except the last step, which may be shorter (shifted back to the edge).
    stride = tile - overlap
    for offsets in (rows, cols):
        steps = np.diff(offsets)
        assert (steps[:-1] == stride).all() if len(steps) > 1 else True
        assert (steps <= stride).all()


def test_iter_windows_exact_fit_and_overlap() -> None:
    windows = iter_windows(512, 512, 256, 0)
    assert [(w.row_off, w.col_off) for w in windows] == [(0, 0), (0, 256), (256, 0), (256, 256)]
    windows = iter_windows(448, 256, 256, 64)
    assert [w.row_off for w in windows] == [0, 192]
    assert coverage(448, 256, windows)[192:256].min() == 2


def test_iter_windows_small_array() -> None:
    windows = iter_windows(100, 300, 256, 32)
    assert all(w.row_off == 0 and w.height == 256 for w in windows)
    assert [w.col_off for w in windows] == [0, 44]
    assert iter_windows(10, 20, 256, 32) == [Window(0, 0, 256, 256)]


@pytest.mark.parametrize(("tile", "overlap"), [(256, 256), (128, 200), (0, 0)])
def test_iter_windows_bad_stride(tile: int, overlap: int) -> None:
    with pytest.raises(InputError):
        iter_windows(100, 100, tile, overlap)


@pytest.mark.parametrize(
    ("height", "width", "size", "halo"), [(1000, 700, 256, 32), (512, 512, 256, 0), (5, 3, 256, 8)]
)
def test_plan_chunks_partition(height: int, width: int, size: int, halo: int) -> None:
    chunks = plan_chunks(height, width, size, halo)
    assert all(isinstance(c, Chunk) for c in chunks)
    assert (coverage(height, width, [c.core for c in chunks]) == 1).all()
    for c in chunks:
        core, read = c.core, c.read
        assert 0 <= read.row_off <= core.row_off and 0 <= read.col_off <= core.col_off
        assert core.row_off + core.height <= read.row_off + read.height <= height
        assert core.col_off + core.width <= read.col_off + read.width <= width
        assert read.row_off == max(0, core.row_off - halo) and read.col_off == max(0, core.col_off - halo)
        assert read.row_off + read.height == min(height, core.row_off + core.height + halo)
        assert read.col_off + read.width == min(width, core.col_off + core.width + halo)
        inner = c.core_in_read
        assert (inner.row_off, inner.col_off) == (core.row_off - read.row_off, core.col_off - read.col_off)


def test_plan_chunks_invalid() -> None:
    with pytest.raises(InputError):
        plan_chunks(100, 100, 0, 8)
    with pytest.raises(InputError):
        plan_chunks(100, 100, 64, -1)


def test_model_shape() -> None:
    assert model_shape(Window(0, 0, 1000, 500), 0.5) == (250, 500)
    assert model_shape((101, 33), 1 / 3) == (34, 11)
    assert model_shape((3, 3), 0.01) == (1, 1)
    assert model_shape(Window(5, 5, 256, 256), 1.0) == (256, 256)
    with pytest.raises(InputError):
        model_shape((10, 10), 0)


def test_skip_empty() -> None:
    valid = np.zeros((300, 300), dtype=bool)
    valid[280, 10] = True
    windows = iter_windows(300, 300, 128, 0)
    kept = skip_empty(windows, valid)
    assert kept == [
        w for w in windows if w.row_off <= 280 < w.row_off + 128 and w.col_off <= 10 < w.col_off + 128
    ]
    assert len(kept) == 1
    assert skip_empty(windows, np.zeros((300, 300), bool)) == []
    # Windows larger than the array (small-array case) look only at the part inside.
    assert skip_empty([Window(0, 0, 256, 256)], np.ones((10, 10), bool)) == [Window(0, 0, 256, 256)]


def test_window_layout_parts_keep_the_order_of_the_whole() -> None:
    layout = plan_layout(1000, 700, 256, 32)
    assert layout.windows() == iter_windows(1000, 700, 256, 32)
    part = layout.touching((300, 500), (0, 10))
    assert part.rows == (224, 448) and part.cols == (0,)
    assert [w for w in layout.windows() if w in part.windows()] == part.windows()
    assert part.extent() == (224, 704, 0, 256)
    assert part.shifted(224, 0) == WindowLayout(256, (0, 224), (0,))
    assert len(layout) == len(layout.windows()) == 5 * 3
