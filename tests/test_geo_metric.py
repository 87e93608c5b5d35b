"""Tests for bldgseg.geo_metric: UTM zones, geometries to and from the local metric CRS."""

from __future__ import annotations

import geopandas as gpd
import pytest
from pyproj import CRS, Transformer
from shapely.geometry import box

from bldgseg.errors import InputError
from bldgseg.geo_metric import from_metric, grid_factors, to_metric, utm_epsg, utm_epsg_at


def test_utm_epsg_zones():
    assert utm_epsg(9.0, 60.0).tolist() == [32632]
    assert utm_epsg([-71.0, 151.2], [-33.4, -33.9]).tolist() == [32719, 32756]
    assert utm_epsg(179.99, 0.1).tolist() == [32660]
    assert utm_epsg(10.0, 86.0).tolist() == [32661]


def test_to_metric_mixed_zones_and_round_trip():
    gdf = gpd.GeoDataFrame(
        {"name": ["oslo", "santiago"]},
        geometry=[box(10.7, 59.9, 10.7002, 59.9001), box(-70.65, -33.45, -70.6498, -33.4499)],
        crs=4326,
        index=[7, 3],
    )
    metric = to_metric(gdf)
    assert metric.crs is None
    assert metric.index.tolist() == [7, 3]
    assert metric["utm_epsg"].tolist() == [32632, 32719]
    assert metric.geometry.iloc[0].centroid.x == pytest.approx(595_000, abs=5_000)  # easting in metres
    back = from_metric(metric.geometry, metric["utm_epsg"], 4326)
    assert back.crs.to_epsg() == 4326
    assert back.index.tolist() == [7, 3]
    for a, b in zip(back, gdf.geometry, strict=True):
        assert a.symmetric_difference(b).area < 1e-6 * b.area
    one = to_metric(gdf.iloc[:1])
    assert one.crs.to_epsg() == 32632


def test_to_metric_needs_crs():
    with pytest.raises(InputError):
        to_metric(gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]))


def test_utm_epsg_at_reprojects_the_point():
    assert utm_epsg_at(9.0, 60.0, 4326) == 32632
    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(-70.65, -33.45)
    assert utm_epsg_at(x, y, 3857) == 32719


def test_grid_factors_on_the_central_meridian():
    to_grid = Transformer.from_crs(4326, CRS.from_epsg(32632), always_xy=True)
    x, y, scale, convergence = grid_factors(to_grid, 9.0, 0.0)
    assert x == pytest.approx(500_000.0, abs=1e-3)
    assert scale == pytest.approx(0.9996, abs=1e-5)
    assert convergence == pytest.approx(0.0, abs=1e-6)
