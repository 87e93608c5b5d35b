"""Tests for bldgseg.vectorize: polygonization, filtering, simplification and regularization of masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import Polygon
from skimage.draw import polygon as draw_polygon

from bldgseg.attributes import shape_attributes
from bldgseg.errors import InputError
from bldgseg.geo_metric import to_metric
from bldgseg.vectorize import label_image_to_polygons, mask_to_polygons

UTM = 32632
UTM_TRANSFORM = Affine(1.0, 0.0, 500_000.0, 0.0, -1.0, 6_650_000.0)  # 1 m pixels near 60 N, 9 E


def _draw(
    shape: tuple[int, int], local: list[tuple[float, float]], angle_deg: float, centre: tuple[float, float]
) -> np.ndarray:
    """Mask of a polygon in local (col, row) coordinates, rotated by ``angle_deg``, moved to ``centre``."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = np.asarray(local, dtype=float) @ rot.T + np.asarray(centre)
    mask = np.zeros(shape, dtype=bool)
    rr, cc = draw_polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, shape)
    mask[rr, cc] = True
    return mask


RECT = [(-15, -6), (15, -6), (15, 6), (-15, 6)]
L_SHAPE = [(-15, -15), (15, -15), (15, 0), (0, 0), (0, 15), (-15, 15)]


def _corner_angles(polygon: Polygon) -> np.ndarray:
    c = np.asarray(polygon.exterior.coords)[:-1]
    prev = np.roll(c, 1, axis=0) - c
    nxt = np.roll(c, -1, axis=0) - c
    cos = np.sum(prev * nxt, axis=1) / (np.linalg.norm(prev, axis=1) * np.linalg.norm(nxt, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _largest(gdf) -> Polygon:
    return max(gdf.geometry, key=lambda g: g.area)


def test_square_polygon_area_crs_confidence():
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:30, 5:25] = True
    gdf = mask_to_polygons(mask, UTM_TRANSFORM, UTM)
    assert list(gdf.columns) == ["confidence", "geometry"]
    assert gdf.crs.to_epsg() == UTM
    assert len(gdf) == 1
    geom = gdf.geometry.iloc[0]
    assert geom.area == pytest.approx(400.0)
    assert geom.bounds == pytest.approx((500_005.0, 6_649_970.0, 500_025.0, 6_649_990.0))
    assert gdf["confidence"].iloc[0] == 1.0


def test_confidence_is_mean_probability_per_component():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:6, 2:6] = True
    mask[10:15, 10:15] = True
    prob = np.zeros((20, 20), dtype=np.float32)
    prob[2:6, 2:6] = 0.9
    prob[10:15, 10:15] = 0.6
    prob[10, 10] = 0.1  # one low pixel in the second component
    gdf = mask_to_polygons(mask, UTM_TRANSFORM, UTM, prob=prob)
    by_area = gdf.assign(area=gdf.area).sort_values("area")
    assert by_area["confidence"].to_numpy() == pytest.approx([0.9, (24 * 0.6 + 0.1) / 25], abs=1e-6)


def test_empty_mask_gives_empty_frame():
    gdf = mask_to_polygons(np.zeros((10, 10), dtype=bool), UTM_TRANSFORM, UTM, min_area_m2=5, regularize=True)
    assert len(gdf) == 0
    assert list(gdf.columns) == ["confidence", "geometry"]
    assert gdf.crs.to_epsg() == UTM


def test_courtyard_hole_is_kept():
    mask = np.zeros((50, 50), dtype=bool)
    mask[5:45, 5:45] = True
    mask[15:35, 15:35] = False
    for kwargs in ({}, {"simplify_m": 0.5}, {"regularize": True}):
        gdf = mask_to_polygons(mask, UTM_TRANSFORM, UTM, **kwargs)
        assert len(gdf) == 1
        geom = gdf.geometry.iloc[0]
        assert len(geom.interiors) == 1, kwargs
        assert geom.area == pytest.approx(1600 - 400, rel=0.01), kwargs


def test_diagonal_pixels_give_valid_polygons():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 2:4] = True
    mask[4:6, 4:6] = True  # touches the first block at one corner only
    gdf = mask_to_polygons(mask, UTM_TRANSFORM, UTM)
    assert gdf.geometry.is_valid.all()
    assert set(gdf.geom_type) == {"Polygon"}
    assert gdf.area.sum() == pytest.approx(8.0)


def test_min_area_is_metric_not_mercator():
    # EPSG:3857 at 60 N: 2 m Mercator pixels are 1 m on the ground
    x0, y0 = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, 60.0)
    transform = Affine(2.0, 0.0, x0, 0.0, -2.0, y0)
    mask = np.zeros((40, 40), dtype=bool)
    mask[2:8, 2:8] = True  # 36 m2 on the ground, 144 "m2" in Mercator units
    mask[20:35, 20:35] = True  # 225 m2
    gdf = mask_to_polygons(mask, transform, 3857, min_area_m2=50)
    assert len(gdf) == 1
    assert shape_attributes(gdf)["area_m2"].iloc[0] == pytest.approx(225, rel=0.01)
    assert gdf.crs.to_epsg() == 3857
    assert len(mask_to_polygons(mask, transform, 3857, min_area_m2=30)) == 2


def test_simplify_reduces_vertices_and_keeps_crs():
    mask = _draw((80, 80), RECT, 30, (40.3, 40.7))
    raw = mask_to_polygons(mask, UTM_TRANSFORM, UTM)
    simple = mask_to_polygons(mask, UTM_TRANSFORM, UTM, simplify_m=1.0)
    assert simple.crs.to_epsg() == UTM
    assert simple.geometry.is_valid.all()
    assert len(simple.geometry.iloc[0].exterior.coords) < len(raw.geometry.iloc[0].exterior.coords) / 3
    assert simple.geometry.iloc[0].area == pytest.approx(raw.geometry.iloc[0].area, rel=0.05)


def test_metric_options_need_crs():
    mask = np.ones((4, 4), dtype=bool)
    assert len(mask_to_polygons(mask, UTM_TRANSFORM, None)) == 1
    with pytest.raises(InputError):
        mask_to_polygons(mask, UTM_TRANSFORM, None, min_area_m2=1)


def test_prob_shape_mismatch_raises():
    with pytest.raises(InputError):
        mask_to_polygons(np.ones((4, 4), dtype=bool), UTM_TRANSFORM, UTM, prob=np.ones((3, 4)))


def _noisy(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blurred outline plus random boundary pixels flipped, like a segmentation network's output."""
    soft = ndimage.gaussian_filter(mask.astype(float), 1.0) + ndimage.gaussian_filter(
        rng.normal(0, 0.5, mask.shape), 1.5
    )
    out = soft > 0.5
    edge = out ^ ndimage.binary_erosion(out)
    out[edge & (rng.random(out.shape) < 0.15)] = False
    return out


@pytest.mark.parametrize("angle", [12.0, 30.0, 57.0])
def test_regularize_noisy_rotated_rectangle(angle):
    rng = np.random.default_rng(int(angle))
    mask = _noisy(_draw((80, 80), RECT, angle, (40.3, 40.7)), rng)
    raw = _largest(mask_to_polygons(mask, UTM_TRANSFORM, UTM))
    gdf = mask_to_polygons(mask, UTM_TRANSFORM, UTM, regularize=True)
    geom = _largest(gdf)
    assert geom.is_valid
    assert len(geom.exterior.coords) == 5  # 4 corners + closing
    assert _corner_angles(geom) == pytest.approx(np.full(4, 90.0), abs=0.5)
    assert geom.area == pytest.approx(raw.area, rel=0.1)
    attrs = shape_attributes(gdf.iloc[[int(np.argmax(gdf.area))]]).iloc[0]
    # rows go down, so a rotation by +angle in pixels is -angle on the map: azimuth 90 + angle
    assert attrs["orientation_deg"] == pytest.approx(90.0 + angle, abs=3.0)
    assert attrs["length_m"] == pytest.approx(30.0, abs=1.5)
    assert attrs["width_m"] == pytest.approx(12.0, abs=1.5)


def test_regularize_clean_rotated_rectangle_measures_within_half_a_pixel():
    gdf = mask_to_polygons(_draw((80, 80), RECT, 30, (40.3, 40.7)), UTM_TRANSFORM, UTM, regularize=True)
    attrs = shape_attributes(gdf).iloc[0]
    assert attrs["length_m"] == pytest.approx(30.0, abs=0.5)
    assert attrs["width_m"] == pytest.approx(12.0, abs=0.5)
    assert attrs["orientation_deg"] == pytest.approx(120.0, abs=1.0)


def test_regularize_in_geographic_crs_comes_back_in_degrees():
    transform = Affine(2e-5, 0.0, 9.0, 0.0, -1e-5, 60.0)  # about 1.1 m x 1.1 m at 60 N
    mask = _draw((80, 80), L_SHAPE, 20, (40.3, 40.7))
    gdf = mask_to_polygons(mask, transform, 4326, regularize=True)
    assert gdf.crs.to_epsg() == 4326
    geom = gdf.geometry.iloc[0]
    assert 9.0 < geom.centroid.x < 9.002 and 59.999 < geom.centroid.y < 60.0
    metric = to_metric(gdf).geometry.iloc[0]
    assert len(metric.exterior.coords) == 7
    assert _corner_angles(metric) == pytest.approx(np.full(6, 90.0), abs=0.5)


def test_label_image_shared_edges_exact():
    labels = np.zeros((20, 20), dtype=np.int32)
    labels[2:10, 2:8] = 1
    labels[2:10, 8:15] = 2
    labels[15:18, 15:18] = 5
    labels[15:16, 2:3] = 5  # second, separate piece of label 5
    prob = np.full((20, 20), 0.5, dtype=np.float32)
    prob[labels == 2] = 0.8
    gdf = label_image_to_polygons(labels, UTM_TRANSFORM, UTM, prob=prob)
    assert gdf["label"].tolist() == [1, 2, 5]
    assert gdf.crs.to_epsg() == UTM
    a, b, c = gdf.geometry
    shared = a.intersection(b)
    assert shared.length == pytest.approx(8.0)
    assert shared.area == 0
    assert a.area == pytest.approx(48) and b.area == pytest.approx(56) and c.area == pytest.approx(10)
    assert c.geom_type == "MultiPolygon"
    assert gdf["confidence"].tolist() == pytest.approx([0.5, 0.8, 0.5])
    empty = label_image_to_polygons(np.zeros((4, 4), dtype=np.int32), UTM_TRANSFORM, UTM)
    assert len(empty) == 0 and {"label", "confidence", "geometry"} <= set(empty.columns)
