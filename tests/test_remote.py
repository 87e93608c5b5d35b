"""Remote and catalogued imagery: COGs over HTTP (byte ranges, retries, 404s), STAC Items, list files, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import rasterio
import rasterio.shutil
import rasterio.warp
from rasterio.env import getenv
from typer.testing import CliRunner

from bldgseg.cli import app
from bldgseg.discovery import discover_inputs, resolve_inputs
from bldgseg.errors import InputError
from bldgseg.executors import DaskExecutor
from bldgseg.io import scan_inputs
from bldgseg.remote import RemotePath, as_raster_path, http_env, remote_identity
from bldgseg.stac import read_stac_images
from bldgseg.vector_formats import read_buildings
from tests.conftest import SAMPLE
from tests.http_server import serve_folder

runner = CliRunner()
SCENE = SAMPLE / "images" / "kampala_mosaic_z20.tif"
DATE = "2023-04-05T10:30:00Z"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests never go through a proxy (GDAL's curl, urllib), and retries are quick."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    monkeypatch.setenv("GDAL_HTTP_PROXY", "")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A served folder: ``scene.tif`` (a COG of a sample tile, 256-px blocks) and ``item.json`` (a STAC Item
    whose ``visual`` asset is ``scene.tif``, relative href)."""
    folder = tmp_path / "www"
    folder.mkdir()
    rasterio.shutil.copy(SCENE, folder / "scene.tif", driver="COG", BLOCKSIZE=256)
    (folder / "item.json").write_text(json.dumps(stac_item({"visual": asset("scene.tif", roles=["visual"])})))
    return folder


def stac_item(assets: dict, **properties: object) -> dict:
    with rasterio.open(SCENE) as ds:
        bounds = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    west, south, east, north = bounds
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "kampala-2023",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": list(bounds),
        "properties": {"datetime": DATE, **properties},
        "links": [],
        "assets": assets,
    }


def asset(href: str, media_type: str = "image/tiff; application=geotiff; profile=cloud-optimized", **extra):
    return {"href": href, "type": media_type, **extra}


def run_cli(inputs: list[str], out: Path, model: Path, *extra: str) -> gpd.GeoDataFrame:
    args = ["run", *inputs, "-o", str(out), "--model", str(model), "--device", "cpu", "--chunk-size", "512"]
    result = runner.invoke(app, [*args, "--max-building-size", "10", *extra])
    assert result.exit_code == 0, result.output
    return read_buildings(out)


def comparable(buildings: gpd.GeoDataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(buildings.drop(columns=["source_image", "image_date"], errors="ignore"))
    frame["geometry"] = buildings.geometry.to_wkb()
    return frame


def test_run_on_a_cog_url_and_a_stac_item_gives_the_buildings_of_the_local_file(tmp_path, www, red_roof_model):
    local = run_cli([str(www / "scene.tif")], tmp_path / "local.gpkg", red_roof_model)
    assert len(local) > 3
    with serve_folder(www) as server:
        url = f"{server.url}/scene.tif"
        remote = run_cli([url], tmp_path / "url.gpkg", red_roof_model)
        from_item = run_cli([f"{server.url}/item.json"], tmp_path / "item.gpkg", red_roof_model)
    pd.testing.assert_frame_equal(comparable(remote), comparable(local))
    pd.testing.assert_frame_equal(comparable(from_item), comparable(local))
    assert set(remote["source_image"]) == {url} and "image_date" not in remote.columns
    assert set(from_item["source_image"]) == {url} and set(from_item["image_date"]) == {DATE}
    assert list(from_item.columns).index("image_date") == list(from_item.columns).index("source_image") + 1
    runs = pyogrio.read_dataframe(tmp_path / "item.gpkg", layer="runs")
    (summary,) = json.loads(runs["inputs"][0])
    assert (summary["path"], summary["stac_item"], summary["image_date"]) == (url, "kampala-2023", DATE)
    # every read of the image was a byte range: windowed reads of the COG, never the whole file
    image_gets = [r for r in server.requests_for("scene.tif") if r.method == "GET"]
    assert image_gets and all(r.range and r.status == 206 for r in image_gets)
    assert max(_range_length(r.range) for r in image_gets) < (www / "scene.tif").stat().st_size / 2


def _range_length(byte_range: str) -> int:
    start, end = byte_range.removeprefix("bytes=").split("-")
    return int(end) - int(start) + 1


def test_a_404_among_good_inputs_is_one_error_line_and_a_list_file_works(tmp_path, www, red_roof_model):
    """A list file naming a STAC Item, a local file and a missing URL, written to GeoParquet: the Item's
    buildings carry its date, the local file's a null ``image_date``; the 404 is one row of ``errors``."""
    local = str((www / "scene.tif").resolve())
    with serve_folder(www) as server:
        listing = tmp_path / "inputs.txt"
        listing.write_text(f"# imagery of the run\n\n{server.url}/item.json\n")
        missing = f"{server.url}/missing.tif"
        buildings = run_cli([str(listing), local, missing], tmp_path / "out.parquet", red_roof_model)
    by_image = buildings.groupby("source_image", dropna=False)["image_date"]
    assert by_image.size().to_dict() == {local: len(buildings) // 2, f"{server.url}/scene.tif": len(buildings) // 2}
    assert by_image.agg(lambda d: set(d.fillna("null"))).to_dict() == {
        local: {"null"},
        f"{server.url}/scene.tif": {DATE},
    }
    errors = pd.read_csv(tmp_path / "out.errors.csv")
    assert list(errors["path"]) == [missing] and list(errors["stage"]) == ["scan"]
    (reason,) = errors["reason"]
    assert "\n" not in reason and reason.startswith(f"{missing}: cannot be opened") and "404" in reason


def test_resume_keeps_the_units_of_an_unchanged_url_and_redoes_a_changed_one(tmp_path, www, red_roof_model):
    run_dir = tmp_path / "run"
    with serve_folder(www) as server:
        url = [f"{server.url}/scene.tif"]
        run_cli(url, tmp_path / "a.gpkg", red_roof_model, "--run-dir", str(run_dir))
        run_cli(url, tmp_path / "a.gpkg", red_roof_model, "--resume", str(run_dir), "--overwrite")
        runs = pyogrio.read_dataframe(tmp_path / "a.gpkg", layer="runs")
        assert runs["units_resumed"][0] == runs["units"][0] == 4
        os.utime(www / "scene.tif", ns=(10**18, 10**18))  # a new ETag and Last-Modified
        run_cli(url, tmp_path / "a.gpkg", red_roof_model, "--resume", str(run_dir), "--overwrite")
    runs = pyogrio.read_dataframe(tmp_path / "a.gpkg", layer="runs")
    assert runs["units_resumed"][0] == 0


def test_info_on_a_url_retries_a_transient_error_and_reads_a_stac_api_item(www):
    with serve_folder(www) as server:
        server.fail_once["/scene.tif"] = 503
        result = runner.invoke(app, ["info", f"{server.url}/scene.tif"])
        assert result.exit_code == 0, result.output
        assert "scene.tif" in result.output and "EPSG:3857" in result.output
        statuses = [r.status for r in server.requests_for("scene.tif")]
        assert statuses[0] == 503 and statuses[1] in (200, 206)
        # a STAC API serves an Item at a URL without extension
        (www / "items").mkdir()
        item = stac_item({"visual": asset(f"{server.url}/scene.tif")})
        (www / "items" / "kampala-2023").write_text(json.dumps(item))
        infos, skipped = scan_inputs([f"{server.url}/items/kampala-2023"])
    assert not skipped and [(i.path, i.stac_item) for i in infos] == [(f"{server.url}/scene.tif", "kampala-2023")]


def test_stac_item_asset_choice_and_its_one_line_errors(tmp_path):
    rgb = {"eo:bands": [{"name": n, "common_name": n} for n in ("red", "green", "blue")]}
    nir = {"eo:bands": [{"name": "nir", "common_name": "nir"}]}
    cases = {
        "visual.json": {"thumb": asset("t.png", "image/png"), "image": asset("a.tif"), "visual": asset("v.tif")},
        "rgb.json": {
            "nir": asset("n.tif", **nir),
            "rgb": asset("c.tif", **rgb),
            "ov": asset("o.tif", roles=["overview"]),
        },
        "single.json": {"image": asset("s.tif", roles=["data"]), "meta": asset("m.xml", "application/xml")},
    }
    expected = {"visual.json": "v.tif", "rgb.json": "c.tif", "single.json": "s.tif"}
    for name, assets in cases.items():
        (tmp_path / name).write_text(json.dumps(stac_item(assets)))
        (image,) = read_stac_images(str(tmp_path / name))
        assert image.href == str(tmp_path / expected[name]) and image.item_id == "kampala-2023"
    none = stac_item({"nir": asset("n.tif", **nir), "a": asset("a.tif"), "b": asset("b.tif")})
    (tmp_path / "none.json").write_text(json.dumps(none))
    with pytest.raises(InputError, match=r"none.json: STAC item kampala-2023 has no visual or RGB image asset "
                       r"\(assets: nir, a, b\); pass the image asset's URL"):
        read_stac_images(str(tmp_path / "none.json"))
    ranged = stac_item({"visual": asset("v.tif")}, start_datetime="2020-01-01T00:00:00Z",
                       end_datetime="2020-02-01T00:00:00+00:00")
    ranged["properties"]["datetime"] = None
    (tmp_path / "ranged.json").write_text(json.dumps(ranged))
    assert read_stac_images(str(tmp_path / "ranged.json"))[0].image_date == "2020-01-01T00:00:00Z/2020-02-01T00:00:00Z"


def test_an_unusable_stac_item_is_skipped_and_a_local_item_reads_its_local_image(tmp_path, www):
    bad = stac_item({"nir": asset("n.tif", roles=["data"]), "x": asset("x.tif")})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    infos, skipped = scan_inputs([www / "item.json", tmp_path / "bad.json"])
    assert [i.path for i in infos] == [(www / "scene.tif").resolve()]
    assert (infos[0].image_date, infos[0].stac_item) == (DATE, "kampala-2023")
    assert len(skipped) == 1 and "assets: nir, x" in skipped[0].reason
    with pytest.raises(InputError, match="bad.json"):
        discover_inputs(tmp_path / "bad.json")


def test_inputs_resolve_urls_lists_and_mangled_urls(tmp_path, www):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "inputs.txt"
    listing.write_text("# comment\n../www/scene.tif\n  https://h.example/a/b.tif?sig=1  \ns3://bucket/key/c.tif\n")
    found = discover_inputs([listing, Path("https://h.example/a/b.tif"), "/vsigs/b/d.tif"])
    assert found == [(www / "scene.tif").resolve(), "https://h.example/a/b.tif?sig=1", "s3://bucket/key/c.tif",
                     "https://h.example/a/b.tif", "/vsigs/b/d.tif"]
    remote = found[1]
    assert isinstance(remote, RemotePath) and (remote.name, remote.stem, remote.parent.name) == ("b.tif", "b", "a")
    assert remote.gdal_path == "/vsicurl/https://h.example/a/b.tif?sig=1"
    assert as_raster_path("s3://bucket/key/c.tif").gdal_path == "/vsis3/bucket/key/c.tif"
    (tmp_path / "nested.txt").write_text("sub/inputs.txt\n")
    with pytest.raises(InputError, match="lists another list file"):
        resolve_inputs(tmp_path / "nested.txt")
    with pytest.raises(InputError, match="no such file or folder"):
        resolve_inputs(tmp_path / "absent.tif")


def test_remote_identity_follows_etag_and_http_defaults_yield_to_the_environment(www, monkeypatch):
    with serve_folder(www) as server:
        url = f"{server.url}/scene.tif"
        first = remote_identity(url)
        os.utime(www / "scene.tif", ns=(10**18, 10**18))
        assert first.startswith(f"{url}|{(www / 'scene.tif').stat().st_size}|") and remote_identity(url) != first
        assert remote_identity(f"{server.url}/missing.tif") == f"{server.url}/missing.tif"
    assert remote_identity("s3://bucket/key.tif") == "s3://bucket/key.tif"
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    monkeypatch.delenv("GDAL_HTTP_RETRY_DELAY")
    with http_env(RemotePath(url)):
        options = getenv()
    assert "GDAL_HTTP_MAX_RETRY" not in options and options["GDAL_HTTP_RETRY_DELAY"] == "1"
    assert options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


def test_dask_workers_are_not_asked_to_see_urls():
    class Client:
        def run(self, fn, paths):
            self.asked = paths
            return {}

    client = Client()
    DaskExecutor(client).check_paths(["https://h/a.tif", "s3://b/k.tif", "/vsis3/b/k.tif", "/data/a.tif"])
    assert client.asked == ["/data/a.tif"]


def test_an_item_collection_gives_every_item_with_hrefs_relative_to_the_file(tmp_path, monkeypatch):
    first = stac_item({"visual": asset("img/a.tif")})
    second = {**stac_item({"visual": asset("https://h.example/b.tif")}), "id": "b"}
    (tmp_path / "search.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [first, second]}))
    monkeypatch.chdir(tmp_path.parent)
    images = read_stac_images(str(tmp_path / "search.geojson"))
    assert [(i.href, i.item_id) for i in images] == [
        (str(tmp_path / "img" / "a.tif"), "kampala-2023"),
        ("https://h.example/b.tif", "b"),
    ]
