"""Mosaics of touching input files: grouping, the VRT, and whole runs on tiles (colour-rule model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import box
from typer.testing import CliRunner

from bldgseg.cli import app
from bldgseg.evaluation import evaluate
from bldgseg.io import RasterInfo, open_raster_info, read_rgb, scan_inputs
from bldgseg.mosaic import group_rasters as group
from bldgseg.mosaic import mosaic_vrt_xml, plan_mosaics, tile_of_points, write_vrt
from bldgseg.pipeline import RunConfig, predict_rasters, run
from tests.conftest import scene, write_rgb

X0, Y0, GSD = 500000.0, 100000.0, 0.3


def config(tmp_path: Path, model: Path, inputs: list[Path], output: str = "out.gpkg", **kw) -> RunConfig:
    kw.setdefault("simplify_m", 0.0)
    kw.setdefault("min_area_m2", 0.0)
    kw.setdefault("overwrite", True)
    return RunConfig(inputs=inputs, output=tmp_path / output, model=str(model), device="cpu", **kw)


def write_tiles(
    folder: Path, image: np.ndarray, tile: int, gsd: float = GSD, mask: np.ndarray | None = None, **kw
) -> list[Path]:
    """Cut ``image`` (3, H, W) into ``tile``-pixel GeoTIFFs named by their row and column."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in range(0, image.shape[1], tile):
        for c in range(0, image.shape[2], tile):
            transform = from_origin(X0 + c * gsd, Y0 - r * gsd, gsd, gsd)
            part = None if mask is None else mask[r : r + tile, c : c + tile]
            path = folder / f"t{r:04d}_{c:04d}.tif"
            paths.append(
                write_rgb(path, image[:, r : r + tile, c : c + tile], transform=transform, mask=part, **kw)
            )
    return paths


def write_bands(path: Path, data: np.ndarray, col: int = 0, row: int = 0, gsd: float = GSD, **kw) -> Path:
    """A GeoTIFF of any band count and type whose corner is ``col``, ``row`` pixels from (X0, Y0)."""
    count, height, width = data.shape
    transform = from_origin(X0 + col * gsd, Y0 - row * gsd, gsd, gsd)
    profile = dict(driver="GTiff", count=count, dtype=data.dtype, crs="EPSG:32636", transform=transform)
    with rasterio.open(path, "w", width=width, height=height, **profile, **kw) as ds:
        ds.write(data)
    return path


def fake_info(name: str, col: float, row: float, size: int = 10, px: float = GSD, crs: str = "EPSG:32636"):
    """A RasterInfo of a ``size``-pixel square whose corner is ``col``, ``row`` pixels from (X0, Y0)."""
    return RasterInfo(
        path=Path(f"/data/{name}.tif"),
        crs=CRS.from_user_input(crs),
        transform=from_origin(X0 + col * GSD, Y0 - row * GSD, px, px),
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        nodata=None,
        bands=(1, 2, 3),
        gsd_m=px,
        has_mask=False,
        stretch=None,
    )


def names(groups: list[list[RasterInfo]]) -> list[list[str]]:
    return [[i.path.stem for i in g] for g in groups]


# -------------------------------------------------------------------------------------------- grouping


def test_touching_files_on_one_grid_are_one_group():
    infos = [
        fake_info("a", 0, 0),
        fake_info("b", 10, 0),  # shares an edge with a
        fake_info("c", 20, 10),  # touches b at a corner only
        fake_info("d", 15, -5),  # overlaps b
        fake_info("gap", 31, 10),  # one pixel away from c
        fake_info("offgrid", 0, 10.5),  # touches a but half a pixel off its grid
        fake_info("utm37", 0, 10, crs="EPSG:32637"),  # touches a in coordinates, another CRS
        fake_info("coarse", -5, 0, px=0.6),  # another pixel size
    ]
    assert names(group(infos)) == [["a", "b", "c", "d"], ["gap"], ["offgrid"], ["utm37"], ["coarse"]]
    # a whisker of rounding (as in XYZ tiles) is still the same grid and still touching
    assert names(group([fake_info("a", 0, 0), fake_info("b", 10 + 1e-9, 1e-9)])) == [["a", "b"]]


def test_mosaic_places_tiles_on_whole_pixels_and_is_named_after_its_first_tile(tmp_path):
    infos = [fake_info("b", 10, 0), fake_info("a", 0, -4), fake_info("single", 100, 100)]
    (mosaic,) = plan_mosaics(infos, tmp_path)
    assert mosaic.name == "mosaic_a_2tiles" and mosaic.path == tmp_path / "mosaic_a_2tiles.vrt"
    assert [(t.path.stem, t.col, t.row) for t in mosaic.tiles] == [("a", 0, 0), ("b", 10, 4)]
    assert (mosaic.width, mosaic.height) == (20, 14)
    assert mosaic.transform.c == pytest.approx(X0) and mosaic.transform.f == pytest.approx(Y0 + 4 * GSD)
    assert mosaic_vrt_xml(mosaic) == mosaic_vrt_xml(plan_mosaics(list(reversed(infos)), tmp_path)[0])


def test_tile_of_points_last_tile_on_top_and_nearest_in_gaps(tmp_path):
    infos = [fake_info("a", 0, 0), fake_info("b", 5, 0), fake_info("c", 0, 10)]
    (mosaic,) = plan_mosaics(infos, tmp_path)
    x = lambda col: X0 + col * GSD  # noqa: E731
    y = lambda row: Y0 - row * GSD  # noqa: E731
    xs = np.array([x(1), x(7), x(14), x(12), x(10)])
    ys = np.array([y(1), y(1), y(5), y(15), y(0)])
    # a only; a and b overlap (b is later); b only; the gap right of c (nearest: c); the edge between a/b and b
    got = [Path(p).stem for p in tile_of_points(xs, ys, mosaic.tiles)]
    assert got == ["a", "b", "b", "c", "b"]


# ------------------------------------------------------------------------------------------------- VRT


def test_vrt_reads_like_one_geotiff_with_masks_and_gaps_invalid(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (3, 200, 200), dtype=np.uint8)
    valid = np.ones((200, 200), bool)
    valid[90:120, 40:60] = False  # a masked patch across a tile edge
    big = open_raster_info(write_rgb(tmp_path / "big.tif", image, mask=valid))
    tiles = write_tiles(tmp_path / "tiles", image, 100, mask=valid)
    infos, _ = scan_inputs(tiles)
    (mosaic,) = plan_mosaics(infos, tmp_path / "mosaics")
    vrt = open_raster_info(write_vrt(mosaic))
    assert vrt.has_mask and (vrt.width, vrt.height) == (200, 200) and vrt.transform == big.transform
    windows = [
        (Window(0, 0, 200, 200), None),
        (Window(-20, -30, 240, 250), (120, 125)),  # past the edges (boundless) and shrunk
        (Window(33, 41, 111, 97), (37, 32)),
    ]
    for window, shape in windows:
        rgb, ok = read_rgb(vrt, window, shape)
        rgb_big, ok_big = read_rgb(big, window, shape)
        assert np.array_equal(ok, ok_big)
        assert np.array_equal(rgb, rgb_big)

    # without one tile: a gap, invalid
    infos = [i for i in infos if i.path.name != "t0100_0100.tif"]
    (mosaic,) = plan_mosaics(infos, tmp_path / "gap")
    rgb, ok = read_rgb(open_raster_info(write_vrt(mosaic)), Window(0, 0, 200, 200))
    assert not ok[100:, 100:].any() and np.array_equal(ok[:100], valid[:100])
    assert np.array_equal(rgb[:, :100, :100], image[:, :100, :100] * valid[None, :100, :100])


def test_nodata_and_alpha_tiles_keep_their_masks(tmp_path):
    """A 4-band tile with per-band nodata beside an RGBA tile: both masks survive, the gap is invalid."""
    left = np.full((4, 20, 20), 200, np.uint8)
    left[:3, 5:10, 5:10] = 0  # nodata in R, G and B
    left[0, 12, 12] = 0  # nodata in R only: still valid in a mosaic (a tile's nodata pixel has all three)
    a = write_bands(tmp_path / "a.tif", left, nodata=0)
    right = np.full((4, 20, 20), 200, np.uint8)
    right[3, :, 15:] = 0  # transparent strip
    b = write_bands(tmp_path / "b.tif", right, col=25, photometric="RGB", alpha="YES")  # 5 pixels of gap
    c = write_rgb(
        tmp_path / "c.tif", np.full((3, 20, 5), 9, np.uint8), transform=from_origin(X0 + 6, Y0, GSD, GSD)
    )
    infos, skipped = scan_inputs([a, b, c])
    assert not skipped
    assert not plan_mosaics(
        infos, tmp_path
    )  # c (3 bands) does not join a and b (4 bands), which do not touch
    # a 4-band filler, all masked, instead of c joins them; the gap stays invalid
    filler = write_bands(tmp_path / "c4.tif", np.full((4, 20, 5), 9, np.uint8), col=20)
    with rasterio.open(filler, "r+") as ds:
        ds.write_mask(np.zeros((20, 5), np.uint8))
    infos, _ = scan_inputs([a, b, filler])
    (mosaic,) = plan_mosaics(infos, tmp_path / "m")
    _, ok = read_rgb(open_raster_info(write_vrt(mosaic)), Window(0, 0, 45, 20))
    expected = np.ones((20, 45), bool)
    expected[5:10, 5:10] = False
    expected[:, 20:25] = False
    expected[:, 40:] = False
    assert np.array_equal(ok, expected)


def test_overlapping_tiles_show_the_one_below_where_the_top_one_is_masked(tmp_path):
    below = write_rgb(tmp_path / "a.tif", np.full((3, 20, 20), 100, np.uint8))
    top_valid = np.ones((20, 20), bool)
    top_valid[:, :5] = False
    top = write_rgb(
        tmp_path / "b.tif",
        np.full((3, 20, 20), 200, np.uint8),
        transform=from_origin(X0 + 10 * GSD, Y0, GSD, GSD),
        mask=top_valid,
    )
    infos, _ = scan_inputs([below, top])
    (mosaic,) = plan_mosaics(infos, tmp_path / "m")
    rgb, ok = read_rgb(open_raster_info(write_vrt(mosaic)), Window(0, 0, 30, 20))
    assert ok.all()
    assert (rgb[0, :, :15] == 100).all() and (rgb[0, :, 15:] == 200).all()


def test_vrt_is_rewritten_only_when_its_text_changes(tmp_path):
    infos = [fake_info("a", 0, 0), fake_info("b", 10, 0)]
    (mosaic,) = plan_mosaics(infos, tmp_path)
    path = write_vrt(mosaic)
    os.utime(path, ns=(1, 1))
    write_vrt(mosaic)
    assert path.stat().st_mtime_ns == 1
    (moved,) = plan_mosaics([fake_info("a", 0, 0), fake_info("b", 0, 10)], tmp_path)
    write_vrt(moved)
    assert path.stat().st_mtime_ns != 1


# ------------------------------------------------------------------------------------------- whole runs

#: A building across the corner of four 100-pixel tiles, and one inside a tile.
CORNER = (80, 70, 130, 125)
INSIDE = (10, 10, 30, 30)


def corner_scene() -> np.ndarray:
    return scene(200, 200, [CORNER, INSIDE])


def footprint(r0: int, c0: int, r1: int, c1: int):
    return box(X0 + c0 * GSD, Y0 - r1 * GSD, X0 + c1 * GSD, Y0 - r0 * GSD)


@pytest.mark.parametrize("model", ["red_roof_model", "roof_instance_model"])
def test_building_across_a_four_tile_corner_comes_out_once_as_from_one_geotiff(tmp_path, model, request):
    model_path = request.getfixturevalue(model)
    folder = tmp_path / "tiles"
    write_tiles(folder, corner_scene(), 100)
    big = write_rgb(tmp_path / "big.tif", corner_scene())
    mosaic = run(config(tmp_path, model_path, [folder], "mosaic.gpkg", texture=False)).buildings
    whole = run(config(tmp_path, model_path, [big], "big.gpkg", texture=False)).buildings
    assert len(mosaic) == 2
    corner = mosaic.loc[mosaic.area_m2.idxmax()]
    assert corner.geometry.symmetric_difference(footprint(*CORNER)).area == pytest.approx(0, abs=1e-6)
    assert corner.area_m2 == pytest.approx(50 * 55 * GSD**2, rel=0.005)
    columns = [c for c in mosaic.columns if c not in ("source_image", "geometry")]
    assert mosaic[columns].round(6).equals(whole[columns].round(6))
    assert all(a.equals(b) for a, b in zip(mosaic.geometry, whole.geometry, strict=True))

    # the same tiles through a VRT given as the input
    vrt = tmp_path / "user.vrt"
    vrt.write_text(mosaic_vrt_xml(plan_mosaics(scan_inputs([folder])[0], tmp_path)[0]))
    from_vrt = run(config(tmp_path, model_path, [vrt], "vrt.gpkg", texture=False)).buildings
    assert all(a.equals(b) for a, b in zip(mosaic.geometry, from_vrt.geometry, strict=True))


def test_separate_keeps_the_pieces_of_each_file(tmp_path, red_roof_model):
    folder = tmp_path / "tiles"
    write_tiles(folder, corner_scene(), 100)
    result = run(config(tmp_path, red_roof_model, [folder], separate=True))
    pieces = result.buildings
    assert len(pieces) == 5
    assert sorted(Path(p).name for p in pieces.source_image) == [
        "t0000_0000.tif",
        "t0000_0000.tif",
        "t0000_0100.tif",
        "t0100_0000.tif",
        "t0100_0100.tif",
    ]
    assert json.loads(result.metadata["mosaics"]) == []
    assert json.loads(result.metadata["parameters"])["separate"] is True


def test_source_image_is_the_tile_holding_the_representative_point(tmp_path, red_roof_model):
    boxes = [CORNER, INSIDE, (20, 90, 40, 140), (150, 30, 190, 45), (160, 150, 170, 160)]
    folder = tmp_path / "tiles"
    tiles = write_tiles(folder, scene(200, 200, boxes), 100)
    result = run(config(tmp_path, red_roof_model, [folder]))
    buildings = result.buildings
    assert len(buildings) == len(boxes)
    points = buildings.geometry.representative_point()
    for point, source in zip(points, buildings.source_image, strict=True):
        with rasterio.open(source) as ds:
            left, bottom, right, top = ds.bounds
        assert left <= point.x < right and bottom < point.y <= top
    assert {Path(s) for s in buildings.source_image} <= set(tiles)
    (mosaic,) = json.loads(result.metadata["mosaics"])
    assert mosaic["name"] == "mosaic_t0000_0000_4tiles" and len(mosaic["tiles"]) == 4


def test_bad_tiles_are_reported_and_the_rest_is_one_mosaic(tmp_path, red_roof_model):
    folder = tmp_path / "tiles"
    write_tiles(folder, corner_scene(), 100)
    write_rgb(
        folder / "t0100_0200.tif", scene(100, 100, []), transform=from_origin(X0 + 60, Y0 - 30, GSD, GSD)
    )
    write_rgb(folder / "z_utm37.tif", scene(100, 100, [INSIDE]), crs="EPSG:32637")
    (folder / "t0000_0200.tif").write_bytes(b"not a tiff")
    result = run(config(tmp_path, red_roof_model, [folder]))
    assert sorted((e.path.name, e.stage) for e in result.errors) == [
        ("t0000_0200.tif", "scan"),
        ("z_utm37.tif", "crs"),
    ]
    buildings = result.buildings
    assert len(buildings) == 2 and buildings.area_m2.max() == pytest.approx(50 * 55 * GSD**2, rel=0.005)
    (mosaic,) = json.loads(result.metadata["mosaics"])
    assert len(mosaic["tiles"]) == 5 and (mosaic["width"], mosaic["height"]) == (300, 200)


def test_resume_keeps_finished_units_and_redoes_those_of_a_changed_tile(tmp_path, red_roof_model):
    folder = tmp_path / "tiles"
    tiles = write_tiles(folder, scene(570, 570, [(180, 170, 230, 225), INSIDE]), 190)
    run_dir = tmp_path / "run"
    kw = dict(chunk_size=100, max_building_size_m=20.0, run_dir=run_dir, texture=False)
    first = run(config(tmp_path, red_roof_model, [folder], **kw))
    assert first.metadata["units"] == 36 and len(first.buildings) == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (entry,) = manifest["inputs"]
    assert entry["mosaic"] == "mosaic_t0000_0000_9tiles" and len(entry["tiles"]) == 9
    again = run(config(tmp_path, red_roof_model, [folder], resume=True, **kw))
    assert again.metadata["units_resumed"] == 36 and len(again.buildings) == 2
    # a new building in the bottom-right tile (pixels 380..570): only the units whose pixels depend on that
    # tile run again: those whose read window (core + 67 px halo) or the model windows touching it (64 px,
    # stride 48) reach it. Cores from 200 on (16 of 36): the read window of core 200..300 ends at 367, but the
    # windows it runs reach 400.
    rgb = scene(190, 190, [(40, 40, 60, 60)])
    write_rgb(tiles[-1], rgb, transform=from_origin(X0 + 380 * GSD, Y0 - 380 * GSD, GSD, GSD))
    changed = run(config(tmp_path, red_roof_model, [folder], resume=True, **kw))
    assert changed.metadata["units_resumed"] == 20
    assert len(changed.buildings) == 3


@pytest.mark.parametrize("output_format", ["gpkg", "fgb"])
def test_per_image_outputs_split_a_mosaic_by_source_image(tmp_path, red_roof_model, output_format):
    folder = tmp_path / "tiles"
    tiles = write_tiles(folder, corner_scene(), 100)
    cfg = config(tmp_path, red_roof_model, [folder], per_image=True, output_format=output_format)
    cfg.output = tmp_path / "per"
    result = run(cfg)
    assert result.output == [tmp_path / "per" / f"{t.stem}.{output_format}" for t in tiles]
    counts = {
        p.stem: len(pyogrio.read_dataframe(p, layer="buildings" if output_format == "gpkg" else None))
        for p in result.output
    }
    assert counts == {"t0000_0000": 1, "t0000_0100": 0, "t0100_0000": 1, "t0100_0100": 0}


def test_probability_map_is_one_cog_per_mosaic(tmp_path, red_roof_model):
    folder = tmp_path / "tiles"
    write_tiles(folder, corner_scene(), 100)
    single = write_rgb(
        tmp_path / "single.tif", scene(50, 50, [INSIDE]), transform=from_origin(0, 0, GSD, GSD)
    )
    masks = tmp_path / "masks"
    run(config(tmp_path, red_roof_model, [folder, single], save_masks=masks))
    assert sorted(p.name for p in masks.iterdir()) == [  # each COG with its QGIS style
        "mosaic_t0000_0000_4tiles.probability.qml",
        "mosaic_t0000_0000_4tiles.probability.tif",
        "single.probability.qml",
        "single.probability.tif",
    ]
    with rasterio.open(masks / "mosaic_t0000_0000_4tiles.probability.tif") as ds:
        assert (ds.width, ds.height) == (200, 200) and ds.transform == from_origin(X0, Y0, GSD, GSD)
        prob = ds.read(1)
    r0, c0, r1, c1 = CORNER
    assert (prob[r0:r1, c0:c1] > 200).all() and (prob[150:, :50] < 50).all()


def test_band_choice_stretch_and_resampling_work_on_a_mosaic(tmp_path, red_roof_model):
    """uint16 tiles with 4 bands, read as --bands 3,2,1, at 0.15 m (halved for the 0.3 m model)."""
    gsd = 0.15
    rgb = scene(400, 400, [(160, 140, 260, 250)]).astype(np.uint16) * 40
    bgr_n = np.concatenate([rgb[::-1], np.full((1, 400, 400), 9000, np.uint16)])
    folder = tmp_path / "tiles"
    folder.mkdir()
    for r in (0, 200):
        for c in (0, 200):
            write_bands(folder / f"t{r}_{c}.tif", bgr_n[:, r : r + 200, c : c + 200], col=c, row=r, gsd=gsd)
    big = write_bands(tmp_path / "big.tif", bgr_n, gsd=gsd)
    mosaic = run(config(tmp_path, red_roof_model, [folder], "m.gpkg", bands=(3, 2, 1))).buildings
    whole = run(config(tmp_path, red_roof_model, [big], "b.gpkg", bands=(3, 2, 1))).buildings
    assert len(mosaic) == 1 and len(whole) == 1
    assert mosaic.geometry.iloc[0].equals(whole.geometry.iloc[0])
    assert mosaic.area_m2.iloc[0] == pytest.approx(100 * 110 * gsd**2, rel=0.03)


def test_info_shows_the_mosaics(tmp_path):
    folder = tmp_path / "tiles"
    write_tiles(folder, corner_scene(), 100)
    write_rgb(folder / "far.tif", scene(64, 64, []), transform=from_origin(0, 0, GSD, GSD))
    runner = CliRunner()
    result = runner.invoke(app, ["info", str(folder)], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "mosaic_t0000_0000_4tiles" in result.output and "200x200" in result.output
    assert "t0100_0100.tif" in result.output and "far.tif" in result.output
    separate = runner.invoke(app, ["info", str(folder), "--separate"], terminal_width=300)
    assert "mosaic_" not in separate.output and "5 raster(s)" in separate.output


def test_evaluate_pairs_mosaic_buildings_with_their_tiles(tmp_path, red_roof_model):
    folder = tmp_path / "tiles"
    write_tiles(folder, corner_scene(), 100)
    run(config(tmp_path, red_roof_model, [folder]))
    truth = gpd.GeoDataFrame(geometry=[footprint(*CORNER), footprint(*INSIDE)], crs="EPSG:32636")
    truth.to_file(tmp_path / "truth.gpkg")
    report = evaluate(tmp_path / "out.gpkg", tmp_path / "truth.gpkg")
    # the images named by source_image: the tiles holding the buildings' representative points
    assert sorted(report.per_image) == ["t0000_0000.tif", "t0100_0000.tif"]
    assert report.per_image["t0000_0000.tif"]["polygon"]["tp"] == 1
    with_images = evaluate(tmp_path / "out.gpkg", tmp_path / "truth.gpkg", images=[folder])
    assert len(with_images.per_image) == 4


def test_predict_writes_one_map_per_mosaic_or_per_file_with_separate(tmp_path, red_roof_model):
    folder = tmp_path / "tiles"
    write_tiles(folder, corner_scene(), 100)
    written, _ = predict_rasters(config(tmp_path, red_roof_model, [folder], save_masks=tmp_path / "p"))
    assert [p.name for p in written] == ["mosaic_t0000_0000_4tiles.probability.tif"]
    cfg = config(tmp_path, red_roof_model, [folder], save_masks=tmp_path / "s", separate=True)
    assert len(predict_rasters(cfg)[0]) == 4


def test_mosaics_in_a_run_directory_inside_the_inputs_are_not_inputs(tmp_path, red_roof_model):
    folder = tmp_path / "tiles"
    write_tiles(folder, corner_scene(), 100)
    kw = dict(run_dir=folder / "run", texture=False)
    first = run(config(tmp_path, red_roof_model, [folder], **kw))
    assert list((folder / "run" / "mosaics").glob("*.vrt"))
    second = run(
        config(tmp_path, red_roof_model, [folder], **kw)
    )  # --overwrite: a new run in the same folder
    assert second.metadata["images"] == 4 and len(second.buildings) == len(first.buildings) == 2


def test_mosaics_whose_first_files_share_a_name_get_distinct_names(tmp_path):
    def moved(info: RasterInfo, folder: str) -> RasterInfo:
        return RasterInfo(**{**info.__dict__, "path": Path(f"/data/{folder}/{info.path.name}")})

    north = [moved(fake_info("a", 0, 0), "north"), moved(fake_info("b", 10, 0), "north")]
    south = [moved(fake_info("a", 0, 50), "south"), moved(fake_info("b", 10, 50), "south")]
    assert [m.name for m in plan_mosaics(north + south, tmp_path)] == [
        "mosaic_north_a_2tiles",
        "mosaic_south_a_2tiles",
    ]
