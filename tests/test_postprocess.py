"""Post-processing steps on exact synthetic geometry (0.5 m pixels in UTM 36N), card defaults and overrides."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from bldgseg.errors import ModelError
from bldgseg.io import RasterInfo
from bldgseg.models import ModelCard
from bldgseg.pipeline import RunConfig, run
from bldgseg.pipeline.config import unit_settings
from bldgseg.postprocess import (
    PixelFrame,
    PostprocessSettings,
    open_mask,
    postprocess_chunk,
    raster_opening_side,
    resolve_postprocess,
    split_touching,
)
from bldgseg.vectorize import instance_outlines, mask_to_polygons
from tests.conftest import RedRoofNet, save_test_model, scene, write_rgb

X0, Y0 = 500000.0, 100000.0
GSD = 0.5
TRANSFORM = from_origin(X0, Y0, GSD, GSD)


def info(width: int = 100, height: int = 100, transform: Affine = TRANSFORM, crs: str = "EPSG:32636") -> RasterInfo:
    return RasterInfo(
        path=Path("scene.tif"),
        crs=CRS.from_user_input(crs),
        transform=transform,
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        nodata=None,
        bands=(1, 2, 3),
        gsd_m=GSD,
        has_mask=False,
        stretch=None,
    )


def settings(**kw) -> PostprocessSettings:
    kw.setdefault("min_area_m2", 0.0)
    kw.setdefault("simplify_m", 0.0)
    return PostprocessSettings(**kw)


def semantic(mask: np.ndarray, post: PostprocessSettings, transform: Affine = TRANSFORM):
    polygons = mask_to_polygons(mask, transform, "EPSG:32636")
    return postprocess_chunk(polygons, info(mask.shape[1], mask.shape[0]), post)


def instances(labels: np.ndarray, post: PostprocessSettings):
    polygons = instance_outlines(labels, TRANSFORM, "EPSG:32636")
    return postprocess_chunk(polygons, info(labels.shape[1], labels.shape[0]), post, instances=True)


def square_m(r0: int, c0: int, r1: int, c1: int):
    """Pixel rows/columns (end-exclusive) as a polygon in metres."""
    return shapely.box(X0 + c0 * GSD, Y0 - r1 * GSD, X0 + c1 * GSD, Y0 - r0 * GSD)


def test_a_2_m2_fragment_is_removed_and_a_4_m2_one_kept():
    mask = np.zeros((60, 60), bool)
    mask[5:25, 5:25] = True  # 100 m²
    mask[40:42, 40:44] = True  # 2 m²
    mask[40:44, 10:14] = True  # 4 m²
    out = semantic(mask, settings(min_area_m2=4.0))
    assert sorted(out.geometry.area) == pytest.approx([4.0, 100.0])
    assert len(semantic(mask, settings(min_area_m2=0.0))) == 3


def test_a_1_m2_hole_is_filled_and_a_4_m2_hole_kept():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True  # 225 m²
    mask[10:12, 10:12] = False  # 1 m² hole
    mask[20:24, 20:24] = False  # 4 m² hole
    (polygon,) = semantic(mask, settings(hole_area_m2=2.0)).geometry
    assert polygon.area == pytest.approx(225.0 - 4.0) and len(polygon.interiors) == 1
    (unfilled,) = semantic(mask, settings()).geometry
    assert unfilled.area == pytest.approx(220.0) and len(unfilled.interiors) == 2


def test_a_hole_holding_another_building_is_not_filled():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[10:20, 10:20] = False  # 25 m² courtyard
    mask[14:16, 14:16] = True  # 1 m² roof inside it
    out = semantic(mask, settings(hole_area_m2=50.0))
    assert sorted(out.geometry.area) == pytest.approx([1.0, 225.0 - 25.0])


def test_a_half_metre_spur_is_cut_and_a_wider_wing_kept():
    mask = np.zeros((60, 60), bool)
    mask[10:30, 10:30] = True  # 10 x 10 m
    mask[18:19, 30:36] = True  # spur 0.5 m wide, 3 m long
    mask[40:43, 20:40] = True  # 1.5 m wide, 10 m long: kept
    out = semantic(mask, settings(opening_m=1.0))
    assert sorted(out.geometry.area) == pytest.approx([15.0, 100.0])
    building = max(out.geometry, key=lambda g: g.area)
    assert building.symmetric_difference(square_m(10, 10, 30, 30)).area == pytest.approx(0.0, abs=1e-9)


def test_a_neck_between_two_roofs_is_cut_into_two_buildings():
    mask = np.zeros((40, 60), bool)
    mask[10:30, 5:25] = True
    mask[10:30, 27:47] = True
    mask[19:20, 25:27] = True  # a 0.5 m wide bridge joins them
    assert len(semantic(mask, settings())) == 1
    out = semantic(mask, settings(opening_m=1.0, min_area_m2=4.0))
    assert sorted(out.geometry.area) == pytest.approx([100.0, 100.0])


def test_a_fragment_touching_a_building_is_merged_into_it():
    labels = np.zeros((40, 40), np.int32)
    labels[5:25, 5:25] = 1  # 100 m²
    labels[10:14, 25:27] = 2  # 2 m², shares a 2 m edge with building 1
    labels[30:32, 30:34] = 3  # 2 m², alone
    merged = instances(labels, settings(min_area_m2=4.0, merge_fragments=True))
    assert len(merged) == 1 and merged.geometry.iloc[0].area == pytest.approx(102.0)
    assert merged.geometry.iloc[0].geom_type == "Polygon"
    dropped = instances(labels, settings(min_area_m2=4.0))
    assert len(dropped) == 1 and dropped.geometry.iloc[0].area == pytest.approx(100.0)


def test_a_fragment_merges_into_the_neighbour_it_shares_the_longest_edge_with_and_walls_stay_exact():
    labels = np.zeros((40, 60), np.int32)
    labels[5:25, 5:25] = 1
    labels[5:25, 27:47] = 2
    labels[12:13, 25:27] = 1  # building 1 reaches building 2 along 0.5 m ...
    labels[10:12, 25:27] = 3  # ... and a 1 m² fragment touches 2 along 1 m and 1 along 2 m
    out = instances(labels, settings(min_area_m2=4.0, merge_fragments=True))
    assert sorted(out.geometry.area) == pytest.approx([100.0, 101.5])
    a, b = out.geometry
    assert a.intersection(b).area == 0.0 and a.intersection(b).length == pytest.approx(1.5)


def _rotated_rectangles_labels() -> np.ndarray:
    """Two 12 x 8 m houses sharing a 8 m wall, rotated 20 degrees, rasterized at 0.5 m (staircase outlines)."""
    labels = np.zeros((80, 80), np.int32)
    a = math.radians(20)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    for label, (x0, x1) in ((1, (-24, 0)), (2, (0, 24))):
        pts = np.array([(x0, -8), (x1, -8), (x1, 8), (x0, 8)], float) @ rot.T + 40
        rr, cc = draw_polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, labels.shape)
        labels[rr, cc] = label
    return labels


def _corner_angles(polygon) -> np.ndarray:
    c = np.asarray(polygon.exterior.coords)[:-1]
    prev, nxt = np.roll(c, 1, axis=0) - c, np.roll(c, -1, axis=0) - c
    cos = np.sum(prev * nxt, axis=1) / (np.linalg.norm(prev, axis=1) * np.linalg.norm(nxt, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_a_regularized_rectangle_has_right_angles():
    mask = _rotated_rectangles_labels() > 0
    (polygon,) = semantic(mask, settings(regularize=True)).geometry
    assert len(polygon.exterior.coords) == 5
    assert _corner_angles(polygon) == pytest.approx(np.full(4, 90.0), abs=0.5)
    assert polygon.area == pytest.approx(24 * 8, rel=0.03)


def test_regularized_instance_neighbours_keep_their_shared_wall_exactly():
    labels = _rotated_rectangles_labels()
    out = instances(labels, settings(regularize=True))
    assert len(out) == 2
    a, b = out.geometry
    for polygon in (a, b):
        assert polygon.geom_type == "Polygon" and len(polygon.exterior.coords) == 5
        assert _corner_angles(polygon) == pytest.approx(np.full(4, 90.0), abs=0.5)
        assert polygon.area == pytest.approx(12 * 8, rel=0.05)
    assert shapely.coverage_is_valid(np.array([a, b], dtype=object))  # identical vertices along the wall
    wall = a.intersection(b)
    assert wall.area == 0.0 and wall.length == pytest.approx(8.0, rel=0.05)
    union = shapely.union_all([a, b])
    assert union.geom_type == "Polygon" and not union.interiors
    assert union.area == pytest.approx(a.area + b.area, abs=1e-9)


def test_without_steps_the_output_is_what_vectorizing_with_a_minimum_area_gave():
    labels = _rotated_rectangles_labels()
    mask = labels > 0
    mask[2:4, 2:5] = True  # a 1.5 m² fragment
    post = PostprocessSettings(min_area_m2=4.0, simplify_m=0.2)
    expected = mask_to_polygons(mask, TRANSFORM, "EPSG:32636", min_area_m2=4.0, simplify_m=0.2)
    got = semantic(mask, post)
    assert len(got) == len(expected) == 1
    assert got.geometry.iloc[0].equals_exact(expected.geometry.iloc[0], 0.0)


def test_steps_do_not_depend_on_the_chunk_window():
    """The same building vectorized in two read windows of one raster comes out with identical coordinates."""
    mask = np.zeros((60, 60), bool)
    mask[10:30, 10:30] = True
    mask[18:19, 30:36] = True
    mask[30:31, 12:14] = True  # a small bump: cut, not a fragment
    post = settings(opening_m=1.0, min_area_m2=4.0, hole_area_m2=1.0, merge_fragments=True)
    raster = info(200, 200)
    results = []
    for col_off, row_off in ((0, 0), (7, 3)):
        big = np.zeros((100, 100), bool)
        big[row_off : row_off + 60, col_off : col_off + 60] = mask
        window = Window(50 - col_off, 50 - row_off, 100, 100)
        transform = window_transform(window, TRANSFORM)
        polygons = mask_to_polygons(big, transform, "EPSG:32636")
        results.append(postprocess_chunk(polygons, raster, post).geometry.iloc[0])
    assert results[0].equals_exact(results[1], 0.0)


def test_pixel_frame_of_a_geographic_raster_has_equal_ground_steps():
    transform = from_origin(9.0, 60.0, 1e-5, 1e-5)  # at 60 N a degree of longitude is half a degree of latitude
    frame = PixelFrame.of(info(transform=transform, crs="EPSG:4326"))
    (x0, y0), (x1, y1) = (frame.to_frame * (9.0, 60.0)), (frame.to_frame * (9.0 + 2e-5, 60.0 - 1e-5))
    assert (x1 - x0) / (y1 - y0) == pytest.approx(2 * math.cos(math.radians(60)), rel=0.01)
    assert frame.unit_m == pytest.approx(1.11, rel=0.01)


# -------------------- defaults from the model card, overridden by options


def card(**kw) -> ModelCard:
    return ModelCard(name="m", architecture="unet", encoder="e", **kw)


def test_card_defaults_are_applied_and_options_override_them():
    tuned = card(min_area_m2=20.0, postprocess={"hole_area_m2": 1, "opening_m": 1.0, "merge_fragments": True})
    assert resolve_postprocess(tuned) == PostprocessSettings(
        min_area_m2=20.0, hole_area_m2=1.0, opening_m=1.0, merge_fragments=True, regularize=False
    )
    given = resolve_postprocess(tuned, min_area_m2=4.0, opening_m=0.0, regularize=True, simplify_m=0.5)
    assert (given.min_area_m2, given.opening_m, given.regularize, given.hole_area_m2) == (4.0, 0.0, True, 1.0)
    assert given.simplify_m == 0.5
    off = resolve_postprocess(tuned, enabled=False, hole_area_m2=2.0)
    assert off == PostprocessSettings(min_area_m2=0.0, hole_area_m2=2.0)
    assert resolve_postprocess(card()) == PostprocessSettings()  # a card without fields: today's behaviour
    with pytest.raises(ModelError, match="opening"):
        resolve_postprocess(card(postprocess={"openin_m": 1.0}))


def test_run_options_reach_the_worker_settings(tmp_path):
    from bldgseg.cli.run import build_run_config
    from bldgseg.cli.run import run as run_command
    from bldgseg.cli.scaling import ExecutorOptions

    model = save_test_model(
        RedRoofNet(), tmp_path, "red-roof-test", tile_size=64, overlap=16, min_area_m2=12.0,
        postprocess={"opening_m": 0.6, "regularize": True},
    )
    import inspect

    flags = {name: p.default for name, p in inspect.signature(run_command).parameters.items()}
    flags.update(inputs=[Path("a.tif")], output=Path("o.gpkg"), model=str(model), device="cpu")
    _, unit = unit_settings(build_run_config(flags, ExecutorOptions.from_flags(flags)), vectorize=True)
    assert (unit.min_area_m2, unit.opening_m, unit.regularize, unit.hole_area_m2) == (12.0, 0.6, True, 0.0)
    flags.update(min_area=3.0, no_regularize=None, regularize=False, hole_area=1.5)
    _, unit = unit_settings(build_run_config(flags, ExecutorOptions.from_flags(flags)), vectorize=True)
    assert (unit.min_area_m2, unit.opening_m, unit.regularize, unit.hole_area_m2) == (3.0, 0.6, False, 1.5)
    flags.update(min_area=None, regularize=None, hole_area=None, no_postprocess=True)
    _, unit = unit_settings(build_run_config(flags, ExecutorOptions.from_flags(flags)), vectorize=True)
    assert (unit.min_area_m2, unit.opening_m, unit.regularize, unit.merge_fragments) == (0.0, 0.0, False, False)


def test_a_run_applies_the_cards_post_processing_the_same_in_any_chunking(tmp_path):
    # a 9 x 6 m roof with a 0.3 m wide, 3 m long spur, across a chunk seam; a 0.9 x 0.9 m fleck
    model = save_test_model(
        RedRoofNet(), tmp_path, "red-roof-test", tile_size=64, overlap=16, min_area_m2=2.0,
        postprocess={"opening_m": 0.6},
    )
    rgb = scene(120, 120, [(40, 40, 60, 70), (49, 70, 50, 80), (100, 10, 103, 13)])
    image = write_rgb(tmp_path / "a.tif", rgb)
    common = dict(inputs=[image], model=str(model), device="cpu", texture=False, simplify_m=0.0)
    whole = run(RunConfig(output=tmp_path / "whole.gpkg", **common)).buildings
    chunked = run(RunConfig(output=tmp_path / "chunked.gpkg", chunk_size=56, max_building_size_m=12.0, **common))
    raw = run(RunConfig(output=tmp_path / "raw.gpkg", postprocess=False, **common)).buildings
    assert len(raw) == 2 and sorted(raw.area_m2.round(2)) == pytest.approx([0.81, 20 * 30 * 0.09 + 10 * 0.09])
    assert len(whole) == 1 and whole.area_m2.iloc[0] == pytest.approx(20 * 30 * 0.09)
    assert whole.geometry.iloc[0].equals_exact(chunked.buildings.geometry.iloc[0], 0.0)


@pytest.mark.parametrize("opening_m", [0.5, 1.0, 1.5, 2.0])
def test_opening_on_the_raster_gives_the_polygon_openings_shapes(opening_m, monkeypatch):
    # the pipeline opens a semantic mask on the raster ((side + 1)-pixel blocks) and vectorizes the opened mask:
    # it must give exactly the shapes the polygon opening (buffers) keeps, with every later step on, on ragged
    # random masks (confidence: the opened pixels' mean there, the whole component's with buffers)
    rng = np.random.default_rng(int(opening_m * 10))
    post = settings(opening_m=opening_m, min_area_m2=2.0, merge_fragments=True, hole_area_m2=1.0)
    side = raster_opening_side(post, info(80, 80))
    assert side == round(opening_m / GSD)  # TRANSFORM: square pixels of GSD metres

    def shapes_of(gdf):
        return sorted(shapely.normalize(shapely.simplify(g, 0)).wkb for g in gdf.geometry)

    kept = 0
    for _ in range(8):
        mask = ndimage.binary_dilation(rng.random((80, 80)) < 0.02, iterations=int(rng.integers(1, 6)))
        mask = ndimage.binary_opening(mask | (rng.random((80, 80)) < 0.05)) | (rng.random((80, 80)) < 0.03)
        prob = rng.random((80, 80))
        polygons = mask_to_polygons(mask, TRANSFORM, "EPSG:32636", prob=prob)
        by_buffers = postprocess_chunk(polygons, info(80, 80), post)
        opened = mask_to_polygons(open_mask(mask, side), TRANSFORM, "EPSG:32636", prob=prob)
        with monkeypatch.context() as patch:  # the opened mask's polygons are never buffered
            patch.setattr("bldgseg.postprocess._opening", lambda *a: pytest.fail("buffered a polygon"))
            on_raster = postprocess_chunk(opened, info(80, 80), replace(post, opening_m=0.0))
        assert shapes_of(on_raster) == shapes_of(by_buffers)
        kept += len(by_buffers)
    assert kept > 20


@pytest.mark.parametrize("side", [1, 2, 3, 4, 5])
def test_open_mask_is_scipys_binary_opening_by_the_square(side):
    """OpenCV's erosion + dilation (anchors for even squares, background outside) = ndimage.binary_opening."""
    rng = np.random.default_rng(side)
    square = np.ones((side + 1, side + 1), dtype=bool)
    for _ in range(20):
        mask = ndimage.binary_dilation(rng.random((61, 73)) < 0.04, iterations=int(rng.integers(1, 5)))
        mask[:, :3] |= rng.random((61, 3)) < 0.7  # parts on the border
        assert np.array_equal(open_mask(mask, side), ndimage.binary_opening(mask, structure=square))


def test_split_touching_cuts_at_the_probability_dip_and_leaves_parts_without_two_cores():
    prob = np.zeros((20, 40), np.float32)
    prob[2:10, 2:14], prob[2:10, 14:17], prob[2:10, 17:30] = 0.95, 0.6, 0.9  # two roofs, a dip between
    prob[14:18, 2:8] = 0.6  # a part of the mask without any core
    labels = split_touching(prob, prob >= 0.5, core=0.8)
    assert labels[5, 5] != labels[5, 25] and labels[5, 5] > 0 and labels[5, 25] > 0
    assert set(np.unique(labels[2:10, 14:17])) <= {labels[5, 5], labels[5, 25]}  # the dip goes to a neighbour
    assert (labels[14:18, 2:8] == 0).all()  # a part without two cores is left to the mask
    assert ((labels > 0) == (prob >= 0.5)).sum() == labels.size - 4 * 6
    assert not split_touching(prob, prob >= 0.5, core=0.97).any()  # no cores: nothing split


def test_split_core_in_a_run_gives_two_buildings_sharing_a_wall(tmp_path, red_roof_model):
    """Two bright roofs joined by a dull strip (probability ~0.55): one building without the split, two that
    share a wall with it, covering the same ground."""
    bright, dull = (200, 60, 60), (120, 110, 60)
    boxes = [(20, 20, 40, 50), (20, 50, 40, 53), (20, 53, 40, 83)]
    image = write_rgb(tmp_path / "roofs.tif", scene(64, 100, boxes, [bright, dull, bright]))
    common = dict(inputs=[image], model=str(red_roof_model), device="cpu", postprocess=False, simplify_m=0.0)
    whole = run(RunConfig(output=tmp_path / "a.gpkg", **common)).buildings
    split = run(RunConfig(output=tmp_path / "b.gpkg", split_core=0.9, **common)).buildings
    assert len(whole) == 1 and len(split) == 2
    first, second = split.geometry
    wall = shapely.length(first.intersection(second))  # across the 6 m roofs, with a jog on the flat strip
    assert first.touches(second) and 6.0 - 1e-6 <= wall <= 7.0
    assert shapely.union(first, second).symmetric_difference(whole.geometry.iloc[0]).area < 1e-6
