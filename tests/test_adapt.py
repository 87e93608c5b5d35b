"""``bldgseg adapt``: refusals, the split and validation rasters, a tiny adaptation, its card, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from typer.testing import CliRunner

from bldgseg.adapt import MIN_BUILDINGS, AdaptConfig, adapt
from bldgseg.adapt.inputs import building_rows, polygon_layer
from bldgseg.adapt.settings import train_config_for
from bldgseg.adapt.split import split_region
from bldgseg.adapt.validation_images import validation_rasters
from bldgseg.cli import app
from bldgseg.errors import InputError, OutputExistsError
from bldgseg.models import load_checkpoint, resolve_checkpoint
from bldgseg.train.data import SourceWindow, TrainSample
from tests.conftest import RedRoofNet, save_test_model, write_rgb

GROUND = (120, 110, 90)  # brownish: the red-roof rule calls it building (logit > 0), adaptation must learn
ROOF = (200, 150, 60)
TILE = 128
GSD = 0.3
ORIGIN = (500000.0, 100000.0)  # EPSG:32636


def roof_boxes(tile_row: int, tile_col: int) -> list[tuple[int, int, int, int]]:
    """Nine 20 x 20 px roofs (6 m, 36 m²) per tile, in tile pixels (row0, col0, row1, col1)."""
    return [(16 + 40 * i, 16 + 40 * j, 36 + 40 * i, 36 + 40 * j) for i in range(3) for j in range(3)]


def write_region(folder: Path, tiles: int = 2) -> tuple[list[Path], Path]:
    """``tiles`` x ``tiles`` adjacent GeoTIFF tiles and their footprints (GeoJSON, EPSG:4326)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, polygons = [], []
    for tr in range(tiles):
        for tc in range(tiles):
            rgb = np.empty((3, TILE, TILE), np.uint8)
            rgb[:] = np.array(GROUND, np.uint8)[:, None, None]
            x0, y0 = ORIGIN[0] + tc * TILE * GSD, ORIGIN[1] - tr * TILE * GSD
            for r0, c0, r1, c1 in roof_boxes(tr, tc):
                rgb[:, r0:r1, c0:c1] = np.array(ROOF, np.uint8)[:, None, None]
                polygons.append(shapely.box(x0 + c0 * GSD, y0 - r1 * GSD, x0 + c1 * GSD, y0 - r0 * GSD))
            path = folder / f"tile_{tr}_{tc}.tif"
            images.append(write_rgb(path, rgb, transform=from_origin(x0, y0, GSD, GSD)))
    footprints = folder / "buildings.geojson"
    gpd.GeoDataFrame({"id": range(len(polygons))}, geometry=polygons, crs="EPSG:32636").to_crs(
        "EPSG:4326"
    ).to_file(footprints)
    return images, footprints


@pytest.fixture
def base_model(tmp_path: Path) -> Path:
    """A trainable 1x1-convolution base model (the red-roof rule) whose card carries known metrics."""
    return save_test_model(
        RedRoofNet(), tmp_path, "red-roof-test", tile_size=64, overlap=16, metrics={"known": {"iou": 0.5}}
    )


def tiny_config(images: list[Path], footprints: Path, out: Path, model: Path, **kw) -> AdaptConfig:
    settings = dict(
        images=images,
        footprints=footprints,
        out_dir=out,
        model=str(model),
        minutes=10.0,
        device="cpu",
        lr=0.05,
        crop=64,
        batch_size=4,
        steps_per_epoch=3,
        epochs=2,
        augmentation={"affine_p": 0},
    )
    settings.update(kw)
    return AdaptConfig(**settings)


def test_tiny_adapt_lowers_the_validation_loss_and_writes_a_complete_card(tmp_path, base_model):
    images, footprints = write_region(tmp_path / "region")
    out = tmp_path / "adapted"
    result = adapt(tiny_config(images, footprints, out, base_model))

    comparison = result.report["adaptation"]["comparison"]
    assert comparison["adapted"]["validation_loss"] < comparison["base"]["validation_loss"]
    for side in ("base", "adapted"):
        assert {"pixel_iou", "polygon_f1", "n_truth"} <= set(comparison[side])
        assert comparison[side]["n_truth"] == 9  # the one held-out tile's buildings
    assert sorted(p.name for p in out.iterdir()) == [
        "adapt_report.json",
        "adapt_report.md",
        "best.json",
        "best.safetensors",
        "metrics.csv",
    ]
    model, card = load_checkpoint(out / "best.safetensors")
    assert card.architecture == "red-roof-test" and card.head == "semantic" and card.gsd_m == GSD
    raw = json.loads((out / "best.json").read_text())
    user = raw["training_data"][0]
    assert user["images"] == [str(p.resolve()) for p in images]
    assert user["footprints"] == str(footprints.resolve())
    adaptation = raw["training"]["adaptation"]
    assert adaptation["base_model"]["name"] == "red-roof-test"
    assert adaptation["base_model"]["metrics"] == {"known": {"iou": 0.5}}
    lon0, lat0, lon1, lat1 = adaptation["region_bbox_lonlat"]
    truth = gpd.GeoSeries([shapely.box(*ORIGIN, ORIGIN[0] + 2 * TILE * GSD, ORIGIN[1] - 2 * TILE * GSD)])
    expected = truth.set_crs("EPSG:32636").to_crs("EPSG:4326").total_bounds
    assert [lon0, lat0, lon1, lat1] == pytest.approx(list(expected), abs=1e-6)
    assert 32 < lon0 < 34 and 0 < lat0 < 1  # UTM 36N near the equator, in degrees
    assert adaptation["steps"] == 6 and adaptation["epochs"] == 2
    # a tiny run on a fast CPU can take well under a second: only the budget is a hard bound
    assert adaptation["minutes_budget"] == 10.0 and 0 <= adaptation["minutes_trained"] < 10
    assert adaptation["device"].startswith("cpu (")
    assert raw["metrics"]["adapt_validation"] == comparison
    assert comparison["adapted"]["polygon_f1"] is not None
    report = json.loads((out / "adapt_report.json").read_text())
    assert report["adaptation"]["comparison"] == comparison
    assert "| validation loss |" in (out / "adapt_report.md").read_text()


def test_refuses_footprints_that_do_not_overlap_the_images(tmp_path, base_model):
    images, footprints = write_region(tmp_path / "region")
    far = gpd.read_file(footprints).to_crs("EPSG:32636").translate(xoff=20000)
    moved = tmp_path / "elsewhere.gpkg"
    gpd.GeoDataFrame(geometry=far, crs="EPSG:32636").to_file(moved, layer="buildings")
    out = tmp_path / "adapted"
    with pytest.raises(InputError) as info:
        adapt(tiny_config(images, moved, out, base_model))
    message = str(info.value)
    assert "overlaps" in message and "EPSG:32636" in message and "lon" in message and "\n" not in message
    assert not out.exists()


def test_refuses_too_few_buildings_and_states_the_minimum(tmp_path, base_model):
    images, footprints = write_region(tmp_path / "region")
    few = tmp_path / "few.geojson"
    gpd.read_file(footprints).iloc[:5].to_file(few)
    with pytest.raises(InputError, match=f"only 5 footprints.*at least {MIN_BUILDINGS} buildings"):
        adapt(tiny_config(images, few, tmp_path / "adapted", base_model))


def test_refuses_images_without_crs_and_an_existing_output(tmp_path, base_model):
    images, footprints = write_region(tmp_path / "region")
    bare = tmp_path / "bare.tif"
    with rasterio.open(images[0]) as src:
        data = src.read()
    profile = dict(driver="GTiff", width=TILE, height=TILE, count=3, dtype="uint8")
    with rasterio.open(bare, "w", **profile, transform=from_origin(*ORIGIN, GSD, GSD)) as dst:
        dst.write(data)
    with pytest.raises(InputError, match="no coordinate reference system"):
        adapt(tiny_config([*images, bare], footprints, tmp_path / "adapted", base_model))
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        adapt(tiny_config(images, footprints, existing, base_model))


def test_ctrl_c_during_training_keeps_the_best_checkpoint_so_far(tmp_path, base_model):
    images, footprints = write_region(tmp_path / "region")

    def interrupt(row: dict) -> None:
        raise KeyboardInterrupt

    result = adapt(tiny_config(images, footprints, tmp_path / "adapted", base_model), on_epoch=interrupt)
    adaptation = result.report["adaptation"]
    assert adaptation["stopped"].startswith("interrupted") and adaptation["epochs"] == 1
    assert adaptation["steps"] == 3 and result.checkpoint.exists()
    assert "adapted" in adaptation["comparison"]


def test_instance_models_are_adapted_as_instance_models():
    _, card = load_checkpoint("aerial-instances")
    config = AdaptConfig(images=[], footprints=Path("x.gpkg"), out_dir=Path("out"))
    train_config = train_config_for(card, resolve_checkpoint("aerial-instances"), config, "x")
    train_config.validate()
    assert train_config.instances and train_config.architecture == "panoptic_unet"
    assert (train_config.center_threshold, train_config.nms_kernel) == (
        card.center_threshold,
        card.nms_kernel,
    )
    assert train_config.init_weights.endswith("aerial-instances.safetensors")
    assert train_config.encoder_weights == "none" and train_config.max_minutes == config.minutes


def test_adapting_keeps_the_base_models_contact_gap():
    _, card = load_checkpoint("aerial-buildings")
    config = AdaptConfig(images=[], footprints=Path("x.gpkg"), out_dir=Path("out"))
    weights = resolve_checkpoint("aerial-buildings")
    gap = dict(card.training.get("config", {})).get("contact_gap", 0)
    assert train_config_for(card, weights, config, "x").contact_gap == gap
    card.training = {**card.training, "config": {**card.training.get("config", {}), "contact_gap": 2}}
    assert train_config_for(card, weights, config, "x").contact_gap == 2


def test_split_keeps_blocks_whole_and_crops_the_validation_part(tmp_path):
    rgb = np.zeros((3, 512, 768), np.uint8)
    rgb[0] = np.arange(768)[None, :] % 251
    rgb[1] = np.arange(512)[:, None] % 241
    valid = np.ones((512, 768), bool)
    valid[:10, :10] = False
    path = write_rgb(tmp_path / "scene.tif", rgb, mask=valid)
    samples = []
    for ti in range(8):  # 8 x 12 tiles of 64 px
        for tj in range(12):
            ids = np.zeros((64, 64), np.int32)
            ids[10:20, 10:20] = 1
            origin = SourceWindow(str(path), tj * 64, ti * 64, 64, 64)
            samples.append(
                TrainSample(
                    np.zeros((64, 64, 3), np.uint8),
                    (ids > 0).astype(np.uint8),
                    f"scene.tif:{ti}:{tj}",
                    group=f"scene:{ti}:{tj}",
                    origin=origin,
                    instances=ids,
                )
            )
    train_set, val = split_region(samples, 0.2, seed=0, min_validation=4)
    groups = {s.group for s in samples}
    assert len(groups) == 24  # blocks of 2 x 2 tiles: 4 x 4 would leave fewer than 10 groups
    assert {s.group for s in train_set}.isdisjoint({s.group for s in val})
    assert len(val) % 4 == 0 and 0.2 <= len(val) / len(samples) < 0.3
    crops = validation_rasters(val, tmp_path / "validation")
    assert len(crops) == len(val) // 4
    with rasterio.open(path) as src:
        source, source_mask = src.read(), src.dataset_mask()
        for crop in crops:
            with rasterio.open(crop) as ds:
                col, row = ~src.transform * (ds.transform.c, ds.transform.f)
                col, row = round(col), round(row)
                assert (ds.width, ds.height) == (128, 128) and ds.crs == src.crs
                assert ds.transform == src.window_transform(rasterio.windows.Window(col, row, 128, 128))
                assert np.array_equal(ds.read(), source[:, row : row + 128, col : col + 128])
                assert np.array_equal(ds.dataset_mask(), source_mask[row : row + 128, col : col + 128])


def test_a_file_held_out_whole_is_used_as_it_is(tmp_path):
    images, footprints = write_region(tmp_path / "region")
    sample = TrainSample(
        np.zeros((TILE, TILE, 3), np.uint8),
        np.zeros((TILE, TILE), np.uint8),
        "tile",
        origin=SourceWindow(str(images[1]), 0, 0, TILE, TILE),
    )
    assert validation_rasters([sample], tmp_path / "validation") == [images[1]]
    assert not (tmp_path / "validation").exists()


def test_footprint_layer_and_osm_building_tags(tmp_path):
    gpkg = tmp_path / "qgis.gpkg"
    square = shapely.box(0, 0, 10, 10)
    gpd.GeoDataFrame(geometry=[shapely.Point(1, 1)], crs="EPSG:32636").to_file(gpkg, layer="street_views")
    gpd.GeoDataFrame(geometry=[square], crs="EPSG:32636").to_file(gpkg, layer="edited")
    assert polygon_layer(gpkg, None) == "edited"  # the only polygon layer
    gpd.GeoDataFrame(geometry=[square], crs="EPSG:32636").to_file(gpkg, layer="buildings")
    assert polygon_layer(gpkg, None) == "buildings"
    assert polygon_layer(gpkg, "edited") == "edited"
    osm = gpd.GeoDataFrame(
        {"building": ["yes", None, "house", "no"], "landuse": [None, "grass", None, None]},
        geometry=[square] * 4,
        crs="EPSG:4326",
    )
    assert building_rows(osm)["building"].tolist() == ["yes", "house"]
    untagged = gpd.GeoDataFrame({"name": ["a"]}, geometry=[square], crs="EPSG:4326")
    assert len(building_rows(untagged)) == 1
    assert pyogrio.list_layers(gpkg).shape[0] == 3


def test_cli_adapt_then_run_with_the_adapted_model(tmp_path, base_model):
    """The real defaults (crop, batch, schedule) through the CLI, with a 3-second budget."""
    images, footprints = write_region(tmp_path / "region")
    out = tmp_path / "adapted"
    runner = CliRunner()
    options = ["--model", str(base_model), "--minutes", "0.05", "--device", "cpu"]
    args = ["adapt", *map(str, images), "--footprints", str(footprints), "-o", str(out), *options]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "validation loss" in result.output and (out / "best.safetensors").exists()
    gpkg = tmp_path / "after.gpkg"
    result = runner.invoke(
        app, ["run", *map(str, images), "-o", str(gpkg), "--model", str(out / "best.safetensors")]
    )
    assert result.exit_code == 0, result.output
    assert len(gpd.read_file(gpkg, layer="buildings")) > 0
    again = runner.invoke(app, args)
    assert again.exit_code == 3 and "already exists" in again.output
    far = tmp_path / "far.gpkg"
    moved = gpd.read_file(footprints).to_crs("EPSG:32636").translate(yoff=-50000)
    gpd.GeoDataFrame(geometry=moved, crs="EPSG:32636").to_file(far, layer="buildings")
    refused = runner.invoke(
        app, ["adapt", *map(str, images), "--footprints", str(far), "-o", str(tmp_path / "x"), *options]
    )
    assert refused.exit_code == 2 and "overlaps" in refused.output
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_tiny_adapt_of_the_bundled_instance_model(tmp_path):
    images, footprints = write_region(tmp_path / "region")
    out = tmp_path / "adapted"
    config = tiny_config(images, footprints, out, "aerial-instances", lr=1e-4, batch_size=2, epochs=1)
    result = adapt(config)
    _, card = load_checkpoint(result.checkpoint)
    assert card.head == "instance" and card.architecture == "panoptic_unet"
    raw = json.loads((out / "best.json").read_text())
    assert "instance_f1" in raw["metrics"]["validation_pixel"]
    comparison = result.report["adaptation"]["comparison"]
    assert comparison["base"]["validation_loss"] > 0 and comparison["adapted"]["polygon_f1"] is not None


def test_an_adapted_card_never_claims_the_base_models_int8_ir():
    from bldgseg.adapt.card import adapted_card

    base = {"name": "base", "int8": {"ir": "base.int8.xml", "weights_file_digest": "abc"}, "training_data": []}
    adaptation = {
        "data": {"images": ["a.tif"], "footprints": "f.gpkg", "footprints_layer": None},
        "region_bbox_lonlat": [32.0, 0.1, 32.1, 0.2],
        "minutes_trained": 1.0,
        "steps": 5,
        "device": "cpu",
    }
    card = adapted_card(base, {"metrics": {}, "training": {}}, adaptation)
    assert "int8" not in card and card["name"] == "base"
