"""End-to-end pipeline behaviour on GeoTIFFs with exactly known buildings (colour-rule model)."""

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.transform import from_origin

from bldgseg.errors import InputError, OutputExistsError
from bldgseg.pipeline import BUILDING_COLUMNS, RunConfig, run
from tests.conftest import scene, write_rgb


def config(tmp_path: Path, model: Path, inputs: list[Path], **kw) -> RunConfig:
    kw.setdefault("simplify_m", 0.0)
    kw.setdefault("min_area_m2", 0.0)
    return RunConfig(inputs=inputs, output=tmp_path / "out.gpkg", model=str(model), device="cpu", **kw)


def test_building_across_window_and_chunk_seams_comes_out_once(tmp_path, red_roof_model):
    # chunks of 100 px: the building spans rows/cols 80..130, crossing the chunk seam at 100 and several
    # 64-px model windows (stride 48).
    image = write_rgb(tmp_path / "a.tif", scene(300, 300, [(80, 80, 130, 130), (200, 20, 220, 40)]))
    result = run(config(tmp_path, red_roof_model, [image], chunk_size=100, max_building_size_m=20.0))
    buildings = result.buildings
    assert len(buildings) == 2
    big = buildings.loc[buildings.area_m2.idxmax()]
    assert big.area_m2 == pytest.approx(50 * 50 * 0.09, rel=0.005)
    assert big.width_m == pytest.approx(15.0, abs=0.3) and big.length_m == pytest.approx(15.0, abs=0.3)
    single = run(config(tmp_path, red_roof_model, [image], chunk_size=4096, overwrite=True)).buildings
    assert sorted(single.area_m2.round(3)) == sorted(buildings.area_m2.round(3))


def test_finer_input_is_resampled_for_the_model_and_polygons_stay_on_the_input_grid(tmp_path, red_roof_model):
    transform = from_origin(500000.0, 100000.0, 0.15, 0.15)
    image = write_rgb(tmp_path / "fine.tif", scene(256, 256, [(40, 60, 121, 151)]), transform=transform)
    buildings = run(config(tmp_path, red_roof_model, [image])).buildings
    assert len(buildings) == 1
    xs, ys = np.asarray(buildings.geometry.iloc[0].exterior.coords).T
    assert np.allclose((xs - 500000.0) / 0.15, np.round((xs - 500000.0) / 0.15), atol=1e-6)
    assert np.allclose((100000.0 - ys) / 0.15, np.round((100000.0 - ys) / 0.15), atol=1e-6)
    assert buildings.area_m2.iloc[0] == pytest.approx(81 * 91 * 0.0225, rel=0.03)


def test_nodata_areas_give_no_buildings(tmp_path, red_roof_model):
    rgb = scene(128, 128, [(10, 10, 40, 40), (80, 80, 110, 110)])
    valid = np.ones((128, 128), bool)
    valid[64:, 64:] = False
    image = write_rgb(tmp_path / "masked.tif", rgb, mask=valid)
    buildings = run(config(tmp_path, red_roof_model, [image])).buildings
    assert len(buildings) == 1
    assert buildings.area_m2.iloc[0] == pytest.approx(30 * 30 * 0.09, rel=0.005)


def test_output_layer_has_every_column_in_the_input_crs(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(128, 128, [(10, 10, 40, 50)]), crs="EPSG:32636")
    run(config(tmp_path, red_roof_model, [image]))
    info = pyogrio.read_info(tmp_path / "out.gpkg", layer="buildings")
    assert set(BUILDING_COLUMNS) <= set(info["fields"])
    assert "32636" in info["crs"]
    runs = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="runs")
    assert runs.loc[0, "model"] == "red-roof-test" and runs.loc[0, "bldgseg_version"]
    # the suite's generic CPU (conftest.generic_cpu): auto resolves to fp32 on torch, and the row says why
    assert (runs.loc[0, "precision"], runs.loc[0, "engine"]) == ("fp32", "torch")
    assert "neither amx_bf16 nor avx512_bf16" in runs.loc[0, "inference_reason"]


def test_bad_inputs_are_skipped_and_reported(tmp_path, red_roof_model):
    folder = tmp_path / "in"
    folder.mkdir()
    write_rgb(folder / "good.tif", scene(64, 64, [(10, 10, 30, 30)]))
    (folder / "garbage.tif").write_bytes(b"not a tiff at all")
    with rasterio.open(
        folder / "nocrs.tif", "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8"
    ) as ds:
        ds.write(np.zeros((3, 8, 8), np.uint8))
    result = run(config(tmp_path, red_roof_model, [folder]))
    assert len(result.buildings) == 1
    assert sorted(s.path.name for s in result.skipped) == ["garbage.tif", "nocrs.tif"]
    skipped = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="errors")
    assert len(skipped) == 2 and all("\n" not in r for r in skipped.reason)


def test_existing_output_is_refused_before_any_work(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    (tmp_path / "out.gpkg").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run(config(tmp_path, red_roof_model, [image]))
    assert (tmp_path / "out.gpkg").read_bytes() == b"precious"
    run(config(tmp_path, red_roof_model, [image], overwrite=True))
    assert len(pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="buildings")) == 1


def test_no_usable_input_is_an_input_error(tmp_path, red_roof_model):
    (tmp_path / "bad.tif").write_bytes(b"junk")
    with pytest.raises(InputError, match="bad.tif"):
        run(config(tmp_path, red_roof_model, [tmp_path / "bad.tif"]))


def test_probability_maps_are_saved_as_cogs(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(300, 300, [(80, 80, 130, 130)]))
    run(config(tmp_path, red_roof_model, [image], chunk_size=128, save_masks=tmp_path / "masks"))
    with rasterio.open(tmp_path / "masks" / "a.probability.tif") as ds:
        prob = ds.read(1)
        assert ds.crs.to_epsg() == 32636 and ds.scales[0] == pytest.approx(1 / 255)
        assert ds.profile["tiled"]
    assert np.array_equal(prob > 127, scene(300, 300, [(80, 80, 130, 130)])[0] == 220)
    assert not [p for p in (tmp_path / "masks").iterdir() if p.name.startswith(".")]
    assert "singlebandpseudocolor" in (tmp_path / "masks" / "a.probability.qml").read_text()  # QGIS default style


def test_per_image_outputs(tmp_path, red_roof_model):
    a = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    b = write_rgb(tmp_path / "b.tif", scene(64, 64, [(10, 10, 20, 20), (40, 40, 50, 50)]))
    cfg = config(tmp_path, red_roof_model, [a, b], per_image=True, separate=True)  # same place: no mosaic
    cfg.output = tmp_path / "per"
    run(cfg)
    assert len(pyogrio.read_dataframe(tmp_path / "per" / "a.gpkg", layer="buildings")) == 1
    assert len(pyogrio.read_dataframe(tmp_path / "per" / "b.gpkg", layer="buildings")) == 2
