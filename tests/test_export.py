"""Tests for bldgseg.export: real GeoPackages and GeoTIFFs in tmp_path."""

from __future__ import annotations

import contextlib
import resource
import signal
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from affine import Affine
from shapely.geometry import MultiPolygon, Polygon, box

from bldgseg import export
from bldgseg.errors import OutputExistsError
from bldgseg.export import default_building_style, read_layer, write_cog, write_gpkg

X0, Y0 = 500_000.0, 3_500_000.0  # UTM 36N


def buildings() -> gpd.GeoDataFrame:
    courtyard = Polygon(
        [(X0 + 60, Y0 + 10), (X0 + 100, Y0 + 10), (X0 + 100, Y0 + 50), (X0 + 60, Y0 + 50)],
        [[(X0 + 70, Y0 + 20), (X0 + 90, Y0 + 20), (X0 + 90, Y0 + 40), (X0 + 70, Y0 + 40)]],
    )
    geoms = [box(X0 + 10, Y0 + 10, X0 + 40, Y0 + 30), courtyard, box(X0 + 20, Y0 + 60, X0 + 50, Y0 + 90)]
    return gpd.GeoDataFrame(
        {
            "area_m2": [g.area for g in geoms],
            "confidence": [0.91, 0.82, 0.73],
            "n_pixels": np.array([2400, 4800, 3600], dtype="int64"),
            "source": ["a.tif", "a.tif", "b.tif"],
        },
        geometry=geoms,
        crs="EPSG:32636",
    )


def runs() -> pd.DataFrame:
    return pd.DataFrame([{"model": "unet-effb0", "seconds_total": 12.5, "parameters": '{"tta": false}'}])


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_buildings(tmp_path: Path) -> None:
    gdf = buildings()
    out = write_gpkg(tmp_path / "out.gpkg", {"buildings": gdf}, {"runs": runs()})
    assert out == tmp_path / "out.gpkg"
    assert files_in(tmp_path) == ["out.gpkg"]

    layers = dict(pyogrio.list_layers(out))
    assert layers["buildings"] == "Polygon"
    assert layers["runs"] is None
    back = read_layer(out, "buildings")
    assert back.crs.to_epsg() == 32636
    assert list(back.columns) == [*gdf.columns.drop("geometry"), "geometry"]
    for col in ("area_m2", "confidence"):
        np.testing.assert_allclose(back[col], gdf[col])
    assert back["n_pixels"].tolist() == gdf["n_pixels"].tolist()
    assert back["source"].tolist() == gdf["source"].tolist()
    assert back.geometry.geom_equals_exact(gdf.geometry, tolerance=1e-9).all()
    assert len(back.geometry.iloc[1].interiors) == 1


def test_runs_table_has_no_geometry(tmp_path: Path) -> None:
    out = write_gpkg(tmp_path / "out.gpkg", {"buildings": buildings()}, {"runs": runs()})
    table = read_layer(out, "runs")
    assert not isinstance(table, gpd.GeoDataFrame)
    assert "geometry" not in table.columns
    assert table.loc[0, "model"] == "unet-effb0"
    assert table.loc[0, "seconds_total"] == 12.5
    with sqlite3.connect(out) as con:
        kind = con.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'runs'").fetchone()
    assert kind == ("attributes",)


def test_layer_styles_row_for_buildings(tmp_path: Path) -> None:
    out = write_gpkg(tmp_path / "out.gpkg", {"buildings": buildings()}, {"runs": runs()})
    con = sqlite3.connect(out)
    try:
        rows = con.execute(
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, styleQML, "
            "useAsDefault, update_time FROM layer_styles"
        ).fetchall()
        contents = con.execute(
            "SELECT data_type, identifier FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    finally:
        con.close()
    assert len(rows) == 1
    catalog, schema, table, geom_col, name, qml, default, updated = rows[0]
    assert (catalog, schema, table, geom_col, name, default) == ("", "", "buildings", "geom", "buildings", 1)
    assert qml == default_building_style()
    assert updated
    assert contents == ("attributes", "layer_styles")
    assert dict(pyogrio.list_layers(out))["layer_styles"] is None


def test_default_building_style_is_a_qgis_document() -> None:
    root = ET.fromstring(default_building_style().encode())
    assert root.tag == "qgis"
    assert root.get("labelsEnabled") == "0"
    renderer = root.find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "graduatedSymbol"
    assert renderer.get("attr") == "confidence"
    layer = renderer.find("symbols/symbol/layer")
    assert layer is not None and layer.get("class") == "SimpleFill"
    props = {p.get("k"): p.get("v") for p in layer.findall("prop")}
    r, g, b, a = (int(v) for v in props["color"].split(","))
    assert 0.3 <= a / 255 <= 0.5
    assert props["outline_style"] == "solid"
    assert props["outline_width_unit"] == "MM"


def test_footprints_without_confidence_get_the_plain_style(tmp_path: Path) -> None:
    footprints = buildings().drop(columns=["confidence"], errors="ignore")
    out = write_gpkg(tmp_path / "fp.gpkg", {"buildings": footprints})
    with sqlite3.connect(out) as con:
        (qml,) = con.execute("SELECT styleQML FROM layer_styles").fetchone()
    assert ET.fromstring(qml.encode()).find("renderer-v2").get("type") == "singleSymbol"
    with_confidence = buildings().assign(confidence=0.7)
    out = write_gpkg(tmp_path / "b.gpkg", {"buildings": with_confidence})
    with sqlite3.connect(out) as con:
        assert con.execute("SELECT styleQML FROM layer_styles").fetchone() == (default_building_style(),)


def test_styles_argument(tmp_path: Path) -> None:
    out = write_gpkg(tmp_path / "plain.gpkg", {"buildings": buildings()}, styles={})
    assert "layer_styles" not in dict(pyogrio.list_layers(out))
    custom = default_building_style().replace("215,25,28,102", "0,0,255,89")
    out = write_gpkg(tmp_path / "custom.gpkg", {"buildings": buildings()}, styles={"buildings": custom})
    with sqlite3.connect(out) as con:
        assert con.execute("SELECT styleQML FROM layer_styles").fetchone() == (custom,)
    with pytest.raises(ValueError, match="runs"):
        write_gpkg(
            tmp_path / "bad.gpkg", {"buildings": buildings()}, {"runs": runs()}, styles={"runs": custom}
        )
    assert not (tmp_path / "bad.gpkg").exists()


def test_existing_output_refused_then_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "out.gpkg"
    dest.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"^out\.gpkg: already exists; pass --overwrite"):
        write_gpkg(dest, {"buildings": buildings()})
    assert dest.read_bytes() == b"precious"
    assert files_in(tmp_path) == ["out.gpkg"]

    write_gpkg(dest, {"buildings": buildings()}, overwrite=True)
    assert len(read_layer(dest, "buildings")) == 3
    assert files_in(tmp_path) == ["out.gpkg"]


def test_failure_in_styles_step_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_styles", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_gpkg(tmp_path / "out.gpkg", {"buildings": buildings()}, {"runs": runs()})
    assert files_in(tmp_path) == []


def test_interrupt_on_second_layer_keeps_old_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out.gpkg"
    write_gpkg(dest, {"buildings": buildings().iloc[:1]})
    before = dest.read_bytes()
    real = pyogrio.write_dataframe
    calls = []

    def interrupted(df, path, **kwargs):
        calls.append(kwargs["layer"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(df, path, **kwargs)

    monkeypatch.setattr(pyogrio, "write_dataframe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_gpkg(dest, {"buildings": buildings()}, {"runs": runs()}, overwrite=True)
    assert calls == ["buildings", "runs"]
    assert files_in(tmp_path) == ["out.gpkg"]
    assert dest.read_bytes() == before


def test_empty_buildings_layer_keeps_schema(tmp_path: Path) -> None:
    empty = buildings().iloc[:0]
    skipped = pd.DataFrame({"path": [], "reason": []}, dtype="string")
    out = write_gpkg(tmp_path / "out.gpkg", {"buildings": empty}, {"runs": runs(), "skipped": skipped})
    layers = dict(pyogrio.list_layers(out))
    assert layers["buildings"] == "Polygon"
    assert layers["skipped"] is None
    back = read_layer(out, "buildings")
    assert len(back) == 0
    assert list(back.columns) == ["area_m2", "confidence", "n_pixels", "source", "geometry"]
    assert back.crs.to_epsg() == 32636
    assert list(read_layer(out, "skipped").columns) == ["path", "reason"]


def test_mixed_polygon_multipolygon_written_as_multi(tmp_path: Path) -> None:
    gdf = buildings()
    gdf.loc[2, "geometry"] = MultiPolygon([box(X0, Y0, X0 + 5, Y0 + 5), box(X0 + 8, Y0, X0 + 12, Y0 + 5)])
    out = write_gpkg(tmp_path / "out.gpkg", {"buildings": gdf})
    assert dict(pyogrio.list_layers(out))["buildings"] == "MultiPolygon"
    assert read_layer(out, "buildings").area.round(6).tolist() == gdf.area.round(6).tolist()


@pytest.mark.parametrize(
    ("layers", "tables", "error"),
    [
        ({}, {}, ValueError),
        ({"buildings": buildings()}, {"Buildings": runs()}, ValueError),
        ({"gpkg_contents": buildings()}, {}, ValueError),
        ({"buildings": pd.DataFrame({"a": [1]})}, {}, TypeError),
        ({"buildings": buildings()}, {"runs": buildings()}, TypeError),
    ],
)
def test_bad_arguments_rejected_before_writing(tmp_path: Path, layers, tables, error) -> None:
    with pytest.raises(error):
        write_gpkg(tmp_path / "out.gpkg", layers, tables)
    assert files_in(tmp_path) == []


def test_write_cog_float_with_overviews(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((1024, 1024), dtype=np.float32)
    transform = Affine(0.5, 0, X0, 0, -0.5, Y0 + 512)
    out = write_cog(tmp_path / "prob.tif", prob, transform, "EPSG:32636", nodata=-1.0)
    assert files_in(tmp_path) == ["prob.tif"]
    with rasterio.open(out) as ds:
        assert ds.profile["tiled"] is True
        assert ds.profile["compress"] == "deflate"
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        assert ds.overviews(1)
        assert ds.crs.to_epsg() == 32636
        assert ds.transform == transform
        assert ds.nodata == -1.0
        np.testing.assert_array_equal(ds.read(1), prob)


def test_write_cog_multiband_bool_and_overwrite(tmp_path: Path) -> None:
    mask = np.zeros((2, 300, 200), dtype=bool)
    mask[0, 10:50, 20:80] = True
    mask[1, 100:200, :] = True
    dest = tmp_path / "mask.tif"
    write_cog(dest, mask, Affine(1, 0, X0, 0, -1, Y0), 32636)
    with pytest.raises(OutputExistsError, match="mask.tif: already exists"):
        write_cog(dest, mask, Affine(1, 0, X0, 0, -1, Y0), 32636)
    write_cog(dest, ~mask, Affine(1, 0, X0, 0, -1, Y0), 32636, overwrite=True)
    with rasterio.open(dest) as ds:
        assert (ds.count, ds.height, ds.width, ds.dtypes[0]) == (2, 300, 200, "uint8")
        np.testing.assert_array_equal(ds.read(), (~mask).astype(np.uint8))
    assert files_in(tmp_path) == ["mask.tif"]


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes of any file fail with EFBIG ("File too large"), as on a full disk.

    RLIMIT_FSIZE on this process, with SIGXFSZ ignored so that write(2) returns the error instead of the
    signal ending the process; both restored afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_write_cog_real_write_failure_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    """The real COG writer (GDAL) failing mid-write, as on a full disk: no temporary file or side-car is left,
    an existing output is kept as it was, and the error reaches the caller."""
    noise = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)  # 4 MiB, incompressible
    dest = tmp_path / "p.tif"
    dest.write_bytes(b"the previous map")
    # 3 MiB: GDAL's temporary overview file fits, the 4.4 MB COG does not; libtiff: "Write/Seek error"
    with file_size_limit(3 * 1024 * 1024), pytest.raises(Exception, match="(?i)(write|seek) error"):
        write_cog(dest, noise, Affine(0.3, 0, X0, 0, -0.3, Y0), 32636, overwrite=True)
    assert files_in(tmp_path) == ["p.tif"] and dest.read_bytes() == b"the previous map"
    write_cog(dest, noise, Affine(0.3, 0, X0, 0, -0.3, Y0), 32636, overwrite=True)  # no limit: it works
    with rasterio.open(dest) as ds:
        assert np.array_equal(ds.read(1), noise)
    assert files_in(tmp_path) == ["p.tif"]


def test_write_cog_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_open(path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"II*\x00 half a tiff")  # a partial temporary file, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(rasterio, "open", broken_open)
    with pytest.raises(KeyboardInterrupt):
        write_cog(tmp_path / "p.tif", np.zeros((8, 8), np.float32), Affine.identity(), 32636)
    assert files_in(tmp_path) == []
    with pytest.raises(ValueError, match="2-D or 3-D"):
        write_cog(tmp_path / "p.tif", np.zeros(8), Affine.identity(), 32636)
