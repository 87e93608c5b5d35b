"""Instances through the whole run: tiling, blending, resampling, chunk seams, ownership and the GeoPackage."""

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.transform import from_origin
from shapely.geometry import box

from bldgseg.errors import ModelError
from bldgseg.pipeline import RunConfig, run
from tests.conftest import ROOF_SHADES, scene, write_rgb

X0, Y0 = 500000.0, 100000.0


def config(tmp_path: Path, model: Path, inputs: list[Path], **kw) -> RunConfig:
    kw.setdefault("simplify_m", 0.0)
    kw.setdefault("min_area_m2", 0.0)
    kw.setdefault("texture", False)
    return RunConfig(inputs=inputs, output=tmp_path / "out.gpkg", model=str(model), device="cpu", **kw)


def footprint(r0: int, c0: int, r1: int, c1: int, gsd: float = 0.3) -> shapely.Polygon:
    return box(X0 + c0 * gsd, Y0 - r1 * gsd, X0 + c1 * gsd, Y0 - r0 * gsd)


def assert_exact_partition(geoms: list, truth: list) -> None:
    """One polygon per true building, equal to it; neighbours share edges (no gap, no overlap)."""
    assert len(geoms) == len(truth)
    for building in truth:
        hits = [g for g in geoms if g.intersection(building).area > 0]
        assert len(hits) == 1
        assert hits[0].symmetric_difference(building).area == pytest.approx(0.0, abs=1e-6)
    for i, a in enumerate(geoms):
        for b in geoms[i + 1 :]:
            assert a.intersection(b).area == pytest.approx(0.0, abs=1e-9)


# a row of touching houses (different roof shades) crossing a chunk seam at column 100 and several model windows
ROW = [(60, 70, 95, 92), (60, 92, 90, 118), (60, 118, 95, 140), (60, 140, 88, 165)]


def test_touching_houses_come_out_one_polygon_each_across_window_and_chunk_seams(
    tmp_path, roof_instance_model
):
    image = write_rgb(tmp_path / "row.tif", scene(200, 240, ROW, ROOF_SHADES))
    truth = [footprint(*b) for b in ROW]
    chunked = run(config(tmp_path, roof_instance_model, [image], chunk_size=100, max_building_size_m=20.0))
    assert json.loads(chunked.metadata["parameters"])["instances"] is True
    assert_exact_partition(list(chunked.buildings.geometry), truth)
    whole = run(config(tmp_path, roof_instance_model, [image], chunk_size=4096, overwrite=True)).buildings
    assert sorted(whole.area_m2.round(3)) == sorted(chunked.buildings.area_m2.round(3))

    # the same model without its instance head merges the row, as any semantic model does
    semantic = run(config(tmp_path, roof_instance_model, [image], instances=False, overwrite=True)).buildings
    assert len(semantic) == 1
    union = shapely.union_all(list(chunked.buildings.geometry))
    assert union.symmetric_difference(semantic.geometry.iloc[0]).area == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("gsd", [0.6, 0.15])
def test_offsets_are_rescaled_to_the_source_grid(tmp_path, roof_instance_model, gsd):
    # the 0.3 m model sees 0.6 m input enlarged 2x (0.15 m: reduced 2x); its offsets, in model pixels, must be
    # halved (doubled) on the source grid. Unscaled, the wide house's far-side pixels would overshoot its
    # centre and join the narrow neighbour.
    scale = 0.6 / gsd
    boxes = [tuple(round(v * scale) for v in b) for b in [(20, 10, 40, 40), (20, 40, 40, 46)]]
    size = round(48 * scale)
    transform = from_origin(X0, Y0, gsd, gsd)
    image = write_rgb(tmp_path / "img.tif", scene(size, size, boxes, ROOF_SHADES), transform=transform)
    buildings = run(config(tmp_path, roof_instance_model, [image])).buildings
    truth = [footprint(*b, gsd=gsd) for b in boxes]
    geoms = list(buildings.geometry)
    assert len(geoms) == 2
    for building in truth:
        best = max(geoms, key=lambda g: g.intersection(building).area)
        # the shared edge lands on its pixel boundary (measured: exactly): at most one source pixel off along
        # its whole length
        edge_m = building.bounds[3] - building.bounds[1]
        assert best.symmetric_difference(building).area <= edge_m * gsd * 1.001


def test_simplified_neighbours_still_share_their_edge(tmp_path, roof_instance_model):
    image = write_rgb(tmp_path / "row.tif", scene(200, 240, ROW, ROOF_SHADES))
    buildings = run(config(tmp_path, roof_instance_model, [image], simplify_m=0.5, min_area_m2=4.0)).buildings
    geoms = list(buildings.geometry)
    assert len(geoms) == len(ROW)
    for i, a in enumerate(geoms):
        for b in geoms[i + 1 :]:
            assert a.intersection(b).area == pytest.approx(0.0, abs=1e-9)
    union = shapely.union_all(geoms)
    assert union.area == pytest.approx(sum(g.area for g in geoms))
    assert union.area == pytest.approx(sum(footprint(*b).area for b in ROW), rel=0.01)


def test_regularized_neighbours_keep_exact_shared_walls_across_chunk_seams(tmp_path, roof_instance_model):
    image = write_rgb(tmp_path / "row.tif", scene(200, 240, ROW, ROOF_SHADES))
    cfg = config(tmp_path, roof_instance_model, [image], regularize=True, chunk_size=100, max_building_size_m=20.0)
    geoms = list(run(cfg).buildings.geometry)
    assert_exact_partition(geoms, [footprint(*b) for b in ROW])
    assert shapely.coverage_is_valid(np.array(geoms, dtype=object))
    for g in geoms:  # right angles, and straight where a neighbour's corner meets the wall (a T-junction)
        c = np.asarray(g.exterior.coords)[:-1]
        after, before = np.roll(c, -1, axis=0) - c, c - np.roll(c, 1, axis=0)
        turn = after[:, 0] * before[:, 1] - after[:, 1] * before[:, 0]
        dot = np.sum(after * before, axis=1)
        assert np.all((np.abs(dot) < 1e-6) | (np.abs(turn) < 1e-6))


def test_instances_need_an_instance_model(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(128, 128, [(10, 10, 40, 50)]))
    with pytest.raises(ModelError, match="no instance head"):
        run(config(tmp_path, red_roof_model, [image], instances=True))
    plain = run(config(tmp_path, red_roof_model, [image]))
    assert json.loads(plain.metadata["parameters"])["instances"] is False
    assert np.isclose(plain.buildings.area_m2.iloc[0], 30 * 40 * 0.09)


def test_bundled_instance_model_separates_buildings_on_a_real_tile(tmp_path):
    """aerial-instances on a dense Kampala sample tile (an unseen city): more, smaller polygons, the same mask."""
    import pyogrio

    from bldgseg.models import load_checkpoint
    from tests.conftest import SAMPLE

    model, card = load_checkpoint("aerial-instances")
    assert card.head == "instance" and card.architecture == "panoptic_unet" and card.license
    assert "test_kampala_unseen_city" in card.metrics
    image = SAMPLE / "images" / "kampala_OAM-309606-261636-19.tif"
    common = dict(inputs=[image], model="aerial-instances", device="cpu", texture=False)
    instances = run(RunConfig(output=tmp_path / "inst.gpkg", **common)).buildings
    semantic = run(RunConfig(output=tmp_path / "sem.gpkg", instances=False, **common)).buildings
    # the mask alone joins touching roofs of the dense block into blobs (31 polygons here, the largest ~600 m²;
    # the instance head gives ~48, the largest ~260 m²)
    assert len(instances) > 1.3 * len(semantic) and instances.area_m2.max() < 0.6 * semantic.area_m2.max()
    union_i = shapely.union_all(list(instances.geometry))
    union_s = shapely.union_all(list(semantic.geometry))
    # same building pixels; only the outlines' simplification differs
    assert union_i.symmetric_difference(union_s).area < 0.05 * union_s.area
    overlap = sum(
        a.intersection(b).area
        for i, a in enumerate(instances.geometry)
        for b in instances.geometry[i + 1 :]
        if a.intersects(b)
    )
    assert overlap < 1e-6 * union_i.area
    assert pyogrio.read_info(tmp_path / "inst.gpkg", layer="buildings")["features"] == len(instances)
