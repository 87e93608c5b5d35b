"""Tests for bldgseg.regularize: orthogonalized building outlines."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from bldgseg.regularize import regularize_polygon
from tests.test_vectorize import _corner_angles


def _jittered(
    coords: list[tuple[float, float]], angle: float, step: float, noise: float, seed: int
) -> Polygon:
    """A polygon densified every ``step`` with vertex jitter, rotated by ``angle`` degrees."""
    rng = np.random.default_rng(seed)
    ring = shapely.segmentize(Polygon(coords).exterior, step)
    pts = np.asarray(ring.coords)[:-1]
    pts = pts + rng.uniform(-noise, noise, pts.shape)
    poly = Polygon(pts)
    return shapely.affinity.rotate(poly, angle, origin=(0, 0))


def test_regularize_polygon_noisy_rectangle():
    poly = _jittered([(0, 0), (40, 0), (40, 20), (0, 20)], 25.0, 1.0, 0.3, seed=1)
    out = regularize_polygon(poly)
    assert out.is_valid
    assert len(out.exterior.coords) == 5
    assert _corner_angles(out) == pytest.approx(np.full(4, 90.0), abs=1e-6)
    assert out.area == pytest.approx(800.0, rel=0.03)
    c = np.asarray(out.exterior.coords)
    edge_angles = np.degrees(np.arctan2(np.diff(c[:, 1]), np.diff(c[:, 0]))) % 90
    assert np.abs((edge_angles - 25.0 + 45) % 90 - 45).max() < 1.0


def test_regularize_polygon_l_shape_has_six_corners():
    coords = [(0, 0), (30, 0), (30, 15), (15, 15), (15, 30), (0, 30)]
    out = regularize_polygon(_jittered(coords, -40.0, 1.0, 0.25, seed=2))
    assert out.is_valid
    assert len(out.exterior.coords) == 7
    assert _corner_angles(out) == pytest.approx(np.full(6, 90.0), abs=1e-6)
    assert out.area == pytest.approx(675.0, rel=0.05)


def test_regularize_polygon_keeps_holes():
    outer = shapely.segmentize(Polygon([(0, 0), (40, 0), (40, 40), (0, 40)]).exterior, 1.0)
    inner = shapely.segmentize(Polygon([(10, 10), (30, 10), (30, 30), (10, 30)]).exterior, 1.0)
    poly = shapely.affinity.rotate(Polygon(outer, [inner]), 10, origin=(0, 0))
    out = regularize_polygon(poly)
    assert out.is_valid
    assert len(out.interiors) == 1
    assert out.area == pytest.approx(1200.0, rel=0.01)


def test_regularize_polygon_degenerate_inputs():
    tri = Polygon([(0, 0), (10, 0), (0, 10)])
    out = regularize_polygon(tri)
    assert out.is_valid and out.area == pytest.approx(50.0, rel=0.2)
    assert regularize_polygon(Polygon()).is_empty
