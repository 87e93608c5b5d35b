"""Output formats by extension: GeoParquet and FlatGeobuf next to the GeoPackage, with the run tables kept."""

import json
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from rasterio.transform import from_origin
from shapely.geometry import box

from bldgseg import vector_formats
from bldgseg.errors import InputError, OutputExistsError
from bldgseg.export import write_buildings
from bldgseg.pipeline import BUILDING_COLUMNS, RunConfig, run
from bldgseg.vector_formats import (
    METADATA_KEY,
    convert_layer,
    output_format,
    read_buildings,
    sidecar_paths,
    write_frame,
)
from tests.conftest import scene, write_rgb

pq = pytest.importorskip("pyarrow.parquet")


def run_config(tmp_path: Path, model: Path, inputs: list[Path], output: Path, **kw) -> RunConfig:
    kw.setdefault("simplify_m", 0.0)
    kw.setdefault("min_area_m2", 0.0)
    return RunConfig(inputs=inputs, output=output, model=str(model), device="cpu", **kw)


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    """A folder with two good scenes (3 buildings) and a file that is not a raster."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_rgb(folder / "a.tif", scene(96, 96, [(10, 10, 30, 40), (50, 50, 80, 70)]))
    apart = from_origin(500100.0, 100000.0, 0.3, 0.3)  # not touching a.tif: two rasters, not one mosaic
    write_rgb(folder / "b.tif", scene(64, 64, [(5, 5, 25, 25)]), transform=apart)
    (folder / "broken.tif").write_bytes(b"not a tiff at all")
    return [folder]


def by_area(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in a fixed order (FlatGeobuf stores them in its spatial index's order)."""
    return frame.sort_values(["area_m2", "centroid_lon"]).reset_index(drop=True)


def assert_same_buildings(back: gpd.GeoDataFrame, reference: gpd.GeoDataFrame) -> None:
    assert list(back.columns) == list(reference.columns)
    assert back.crs == reference.crs
    back, reference = by_area(back), by_area(reference)
    assert len(back) == len(reference) == 3
    pd.testing.assert_frame_equal(
        pd.DataFrame(back.drop(columns="geometry")), pd.DataFrame(reference.drop(columns="geometry")),
        check_dtype=False,
    )
    assert back.geometry.geom_equals_exact(reference.geometry, tolerance=1e-9).all()


def test_parquet_and_fgb_hold_what_the_geopackage_holds(tmp_path, red_roof_model, inputs):
    run(run_config(tmp_path, red_roof_model, inputs, tmp_path / "b.gpkg"))
    reference = pyogrio.read_dataframe(tmp_path / "b.gpkg", layer="buildings")
    assert list(reference.columns) == [*BUILDING_COLUMNS, "geometry"]

    result = run(run_config(tmp_path, red_roof_model, inputs, tmp_path / "b.parquet"))
    assert_same_buildings(gpd.read_parquet(tmp_path / "b.parquet"), reference)
    assert len(result.buildings) == 3
    schema = pq.read_schema(tmp_path / "b.parquet")
    geo = json.loads(schema.metadata[b"geo"])
    column = geo["columns"]["geometry"]
    assert geo["version"] == "1.1.0" and column["encoding"] == "WKB"
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"] and "bbox" in schema.names
    assert column["bbox"] == pytest.approx(list(reference.total_bounds))
    stored = json.loads(schema.metadata[METADATA_KEY.encode()])
    assert stored["runs"][0]["model"] == "red-roof-test" and stored["runs"][0]["buildings"] == 3
    assert [Path(e["path"]).name for e in stored["errors"]] == ["broken.tif"]
    errors = pd.read_csv(tmp_path / "b.errors.csv")
    assert list(errors.columns) == ["path", "reason", "stage", "unit"]
    assert [Path(p).name for p in errors.path] == ["broken.tif"] and errors.stage.tolist() == ["scan"]

    run(run_config(tmp_path, red_roof_model, inputs, tmp_path / "b.fgb"))
    assert_same_buildings(pyogrio.read_dataframe(tmp_path / "b.fgb"), reference)
    sidecar = json.loads((tmp_path / "b.run.json").read_text())
    assert sidecar["runs"][0]["model"] == "red-roof-test"
    assert [Path(e["path"]).name for e in sidecar["errors"]] == ["broken.tif"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging file or run dir


def test_parquet_is_read_through_gdal_where_it_has_the_driver(tmp_path):
    if "Parquet" not in pyogrio.list_drivers():
        pytest.skip("this GDAL has no Parquet driver")
    frame = gpd.GeoDataFrame({"area_m2": [1.0]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:32636")
    write_frame(tmp_path / "x.parquet", frame, {})
    back = pyogrio.read_dataframe(tmp_path / "x.parquet")
    assert back.crs == frame.crs and back.area_m2.tolist() == [1.0]


def test_per_image_writes_the_chosen_format(tmp_path, red_roof_model, inputs):
    cfg = run_config(tmp_path, red_roof_model, inputs, tmp_path / "per", per_image=True, output_format="fgb")
    run(cfg)
    assert sorted(p.name for p in (tmp_path / "per").iterdir()) == ["a.fgb", "a.run.json", "b.fgb", "b.run.json"]
    assert len(pyogrio.read_dataframe(tmp_path / "per" / "a.fgb")) == 2
    cfg = run_config(tmp_path, red_roof_model, inputs, tmp_path / "pq", per_image=True, output_format="parquet")
    result = run(cfg)
    assert [p.name for p in result.output] == ["a.parquet", "b.parquet"]
    assert len(gpd.read_parquet(tmp_path / "pq" / "b.parquet")) == 1
    assert (tmp_path / "pq" / "a.errors.csv").exists()
    with pytest.raises(OutputExistsError, match="a.parquet.*--overwrite"):
        run(cfg)


def test_an_empty_run_still_writes_every_column(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "empty.tif", scene(64, 64, []))
    run(run_config(tmp_path, red_roof_model, [image], tmp_path / "e.parquet"))
    back = gpd.read_parquet(tmp_path / "e.parquet")
    assert len(back) == 0 and list(back.columns) == [*BUILDING_COLUMNS, "geometry"]
    assert pd.read_csv(tmp_path / "e.errors.csv").empty


@pytest.mark.parametrize(
    ("name", "message"),
    [("b.shp", "unknown output format .shp"), ("b", "unknown output format \\(no extension\\)")],
)
def test_unknown_extensions_are_refused_before_any_work(tmp_path, red_roof_model, name, message):
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    with pytest.raises(InputError, match=message + ".*.parquet"):
        run(run_config(tmp_path, red_roof_model, [image], tmp_path / name))


def test_format_must_agree_with_the_extension(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    with pytest.raises(InputError, match="--format fgb does not match"):
        run(run_config(tmp_path, red_roof_model, [image], tmp_path / "b.gpkg", output_format="fgb"))
    with pytest.raises(InputError, match="--format shp: unknown"):
        run(run_config(tmp_path, red_roof_model, [image], tmp_path / "d", per_image=True, output_format="shp"))


def test_an_existing_sidecar_is_refused_without_overwrite(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    (tmp_path / "b.run.json").write_text("precious")
    with pytest.raises(OutputExistsError, match="b.run.json.*--overwrite"):
        run(run_config(tmp_path, red_roof_model, [image], tmp_path / "b.fgb"))
    assert (tmp_path / "b.run.json").read_text() == "precious" and not (tmp_path / "b.fgb").exists()
    run(run_config(tmp_path, red_roof_model, [image], tmp_path / "b.fgb", overwrite=True))
    assert json.loads((tmp_path / "b.run.json").read_text())["runs"]


def test_missing_pyarrow_is_one_line_naming_the_extra(tmp_path, red_roof_model, monkeypatch):
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(InputError, match=r"b.parquet: GeoParquet output needs pyarrow.*bldgseg\[parquet\]") as err:
        run(run_config(tmp_path, red_roof_model, [image], tmp_path / "b.parquet"))
    assert "\n" not in str(err.value) and not list(tmp_path.glob("*.parquet"))


def small_gpkg(tmp_path: Path, rows: int = 5) -> Path:
    frame = gpd.GeoDataFrame(
        {"area_m2": [float(i) for i in range(rows)]},
        geometry=[box(i, 0, i + 1, 1) for i in range(rows)],
        crs="EPSG:32636",
    )
    src = tmp_path / "src.gpkg"
    pyogrio.write_dataframe(frame, src, layer="buildings", driver="GPKG")
    return src


@pytest.mark.parametrize("suffix", [".parquet", ".fgb"])
def test_an_interrupted_conversion_leaves_no_partial_file(tmp_path, monkeypatch, suffix):
    src = small_gpkg(tmp_path, rows=12)
    monkeypatch.setattr(vector_formats, "BATCH_ROWS", 5)
    real_write = vector_formats.GeoParquetWriter.write
    real_write_arrow = pyogrio.write_arrow
    calls = []

    def interrupted_write(self, attributes, wkb):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(self, attributes, wkb)

    def interrupted_write_arrow(reader, path, **kwargs):
        real_write_arrow(reader, path, **kwargs)  # the whole file is there, not yet moved into place
        raise KeyboardInterrupt

    monkeypatch.setattr(vector_formats.GeoParquetWriter, "write", interrupted_write)
    monkeypatch.setattr(vector_formats.pyogrio, "write_arrow", interrupted_write_arrow)
    dest = tmp_path / f"out{suffix}"
    with pytest.raises(KeyboardInterrupt):
        convert_layer(src, dest, {"errors": pd.DataFrame({"path": ["x"]})})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.gpkg"]


def test_conversion_streams_in_batches_and_keeps_every_row(tmp_path, monkeypatch):
    src = small_gpkg(tmp_path, rows=12)
    monkeypatch.setattr(vector_formats, "BATCH_ROWS", 5)
    convert_layer(src, tmp_path / "out.parquet", {})
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 12
    back = gpd.read_parquet(tmp_path / "out.parquet")
    assert back.area_m2.tolist() == [float(i) for i in range(12)]
    assert back.geometry.equals(gpd.GeoSeries([box(i, 0, i + 1, 1) for i in range(12)], crs="EPSG:32636"))
    near = gpd.read_parquet(tmp_path / "out.parquet", bbox=(0.5, 0.2, 2.5, 0.8))  # through the bbox covering
    assert near.area_m2.tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("suffix", [".gpkg", ".parquet", ".fgb"])
def test_write_buildings_writes_each_format(tmp_path, suffix):
    frame = gpd.GeoDataFrame(
        {"osm_id": [7, 8], "name": ["a", None]}, geometry=[box(0, 0, 1, 1), box(2, 2, 3, 3)], crs=4326
    )
    errors = pd.DataFrame({"path": ["bad.tif"], "reason": ["junk"], "stage": ["scan"], "unit": [""]})
    dest = write_buildings(tmp_path / f"e{suffix}", frame, {"errors": errors})
    back = read_buildings(dest)
    assert sorted(back.osm_id) == [7, 8] and back.crs.to_epsg() == 4326
    assert [p.name for p in sidecar_paths(dest)] == {
        ".gpkg": [], ".parquet": ["e.errors.csv"], ".fgb": ["e.run.json"]
    }[suffix]
    with pytest.raises(OutputExistsError):
        write_buildings(dest, frame, {"errors": errors})


def test_output_format_is_the_extension():
    assert [output_format(p) for p in ("a.GPKG", "b.parquet", "c.fgb")] == ["gpkg", "parquet", "fgb"]
    with pytest.raises(InputError, match="a.geojson: unknown output format .geojson"):
        output_format("a.geojson")
