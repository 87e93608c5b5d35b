"""Tests for bldgseg.footprints: layer choice, polygon rows, repair and the error messages."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import LineString, Point, Polygon, box

from bldgseg.errors import InputError
from bldgseg.footprints import choose_layer, read_footprints, spatial_layers


def _write(path: Path, layer: str, geoms: list, crs=32636, **columns) -> Path:
    gdf = gpd.GeoDataFrame(columns or {"name": [f"b{i}" for i in range(len(geoms))]}, geometry=geoms, crs=crs)
    if path.suffix == ".geojson":
        gdf.to_file(path, driver="GeoJSON")
    else:
        gdf.to_file(path, layer=layer, driver="GPKG", mode="a" if path.exists() else "w")
    return path


def test_layer_choice(tmp_path: Path) -> None:
    one = _write(tmp_path / "one.gpkg", "houses", [box(0, 0, 1, 1)])
    assert choose_layer(one) == "houses"
    two = _write(_write(tmp_path / "two.gpkg", "roads", [box(0, 0, 1, 1)]), "buildings", [box(0, 0, 1, 1)])
    assert spatial_layers(two) == ["roads", "buildings"]
    assert choose_layer(two) == "buildings"
    three = _write(_write(tmp_path / "three.gpkg", "a", [box(0, 0, 1, 1)]), "b", [box(0, 0, 1, 1)])
    with pytest.raises(InputError, match=r"several layers \(a, b\); choose one with --footprints-layer"):
        choose_layer(three, option="--footprints-layer")
    assert choose_layer(three, several="first") == "a"
    with pytest.raises(InputError, match="no layer 'c'"):
        choose_layer(three, "c")
    assert choose_layer(three, "c", strict=False, several="first") == "a"


def test_polygon_rows_kept_with_attributes(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.gpkg", "buildings", [box(0, 0, 2, 2), box(5, 5, 6, 6)], height=[3.0, 6.0])
    gdf = read_footprints(path)
    assert gdf["height"].tolist() == [3.0, 6.0]
    assert gdf.crs.to_epsg() == 32636
    assert list(gdf.index) == [0, 1]
    assert list(read_footprints(path, fid_as_index=True).index) == [1, 2]


def test_repair_keeps_polygonal_parts(tmp_path: Path) -> None:
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    path = _write(tmp_path / "f.geojson", "f", [bowtie, box(5, 5, 6, 6)])
    assert len(read_footprints(path)) == 2  # types only
    repaired = read_footprints(path, repair=True)
    assert all(g.is_valid for g in repaired.geometry)
    assert repaired.geometry.iloc[0].area == pytest.approx(2.0)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="footprint file not found"):
        read_footprints(tmp_path / "missing.gpkg")
    lines = _write(tmp_path / "lines.gpkg", "l", [LineString([(0, 0), (1, 1)]), Point(3, 3)])
    with pytest.raises(InputError, match=r"no polygon footprints found; give a polygon layer \(--layer\)"):
        read_footprints(lines, allow_empty=True)
    with pytest.warns(UserWarning, match="crs"):
        no_crs = _write(tmp_path / "nocrs.gpkg", "n", [box(0, 0, 1, 1)], crs=None)
    with pytest.raises(InputError, match="no coordinate reference system"):
        read_footprints(no_crs)


def test_empty_layer(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.gpkg", "buildings", [], name=[])
    assert read_footprints(path, allow_empty=True).empty
    with pytest.raises(InputError, match="no polygon footprints"):
        read_footprints(path)


def test_geoparquet_is_read_even_without_gdal_parquet_driver(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    gdf = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[box(0, 0, 1, 1), Point(5, 5)], crs=32636)
    gdf.to_parquet(tmp_path / "fp.parquet")
    assert spatial_layers(tmp_path / "fp.parquet") == ["fp"]
    back = read_footprints(tmp_path / "fp.parquet")
    assert back.name.tolist() == ["a"] and back.crs.to_epsg() == 32636
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="bad.parquet: cannot read footprints"):
        read_footprints(tmp_path / "bad.parquet")
