"""Tests for bldgseg.street.geometry, .walls, .level_grid on rendered scenes: height, width, floors, WWR, occlusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import shapely.affinity

from bldgseg.errors import InputError
from bldgseg.street.cameras import Camera, hfov_to_focal
from bldgseg.street.geometry import ClassRoles, floors_from_profile, measure_photo
from bldgseg.street.level_grid import level_grid
from bldgseg.street.walls import Footprints, cast_rays
from tests.test_street_render import BUILDING, CAR, CLASSES, SKY, VEGETATION, Box, Shot, render

ROLES = ClassRoles.from_names(CLASSES)

# A street scene (metres, x east, y north): the camera stands at the origin.
NORTH = Box(-6.0, 18.0, 12.0, 10.0, 9.0, storeys=3)  # 3 storeys of 3 m, wall at y = 18 facing the camera
HIDDEN = Box(-3.0, 32.0, 6.0, 6.0, 6.0, storeys=2)  # behind NORTH, lower: never visible
EAST = Box(20.0, -5.0, 10.0, 8.0, 12.0, storeys=4, angle_deg=90.0)  # back wall at x = 12, 10 m long, no door
TALL = Box(-7.0, 20.0, 14.0, 8.0, 16.5, storeys=5, storey_m=3.3)  # for the pitched-up camera
SCENE = [NORTH, HIDDEN, EAST]


def camera_for(shot: Shot) -> Camera:
    focal = hfov_to_focal(shot.hfov_deg, shot.width) if shot.projection == "pinhole" else None
    return Camera(
        shot.width, shot.height, shot.projection, focal, shot.heading_deg, shot.pitch_deg, shot.roll_deg
    )


def measure(boxes: list[Box], shot: Shot, **kwargs) -> dict[int, dict]:
    labels, rgb = render(boxes, shot, with_rgb=True)
    buildings = [b for b in boxes if b.label == BUILDING]  # cars and trees are not in the footprints
    fp = Footprints.from_geometries([shapely.Polygon(b.corners()) for b in buildings])
    obs = measure_photo(labels, ROLES, camera_for(shot), shot.x, shot.y, shot.height_m, fp, rgb=rgb, **kwargs)
    return {o.building: o.to_dict() for o in obs}


def check(obs: dict, box: Box, wall_length: float, front: bool = True) -> None:
    assert obs["height_m"] == pytest.approx(box.height, rel=0.01)
    assert obs["width_m"] == pytest.approx(wall_length, rel=0.05)
    assert obs["width_complete"]
    assert obs["floors"] == box.storeys
    assert obs["storey_height_m"] == pytest.approx(box.storey, rel=0.05)
    assert obs["window_wall_ratio"] == pytest.approx(box.window_wall_ratio(wall_length, front), abs=0.02)


def test_pinhole_level_camera_measures_the_facade_and_not_the_hidden_building():
    obs = measure(SCENE, Shot(0.0, 0.0, 1.6, heading_deg=0.0, width=640, height=480, hfov_deg=70.0))
    assert set(obs) == {0}  # HIDDEN (1) is behind NORTH, EAST (2) is outside the view
    check(obs[0], NORTH, NORTH.length)
    assert obs[0]["distance_m"] == pytest.approx(18.0, rel=0.03)
    assert obs[0]["height_base"] == "ground line"
    assert obs[0]["facade_mean_r"] == pytest.approx(NORTH.colour[0] * 1.0, abs=10)


def test_pinhole_pitched_and_rolled_camera():
    shot = Shot(
        1.0, 0.0, 2.5, heading_deg=5.0, width=640, height=480, hfov_deg=70.0, pitch_deg=20.0, roll_deg=4.0
    )
    obs = measure([TALL], shot)
    check(obs[0], TALL, TALL.length)


def test_pinhole_pitched_down():
    shot = Shot(0.0, 0.0, 6.0, heading_deg=0.0, width=640, height=480, hfov_deg=75.0, pitch_deg=-8.0)
    obs = measure([NORTH], shot)
    check(obs[0], NORTH, NORTH.length)


def test_equirectangular_level_panorama_sees_buildings_all_around():
    obs = measure(
        SCENE, Shot(0.0, 0.0, 1.6, heading_deg=30.0, width=1200, height=600, projection="equirectangular")
    )
    assert set(obs) == {0, 2}
    check(obs[0], NORTH, NORTH.length)
    check(obs[2], EAST, EAST.length, front=False)
    assert obs[2]["bearing_deg"] == pytest.approx(90.0, abs=1.0)


def test_equirectangular_pitched_and_rolled_panorama():
    shot = Shot(
        0.5, -1.0, 2.2, heading_deg=200.0, width=1200, height=600, projection="equirectangular",
        pitch_deg=8.0, roll_deg=-5.0,
    )  # fmt: skip
    obs = measure(SCENE, shot)
    assert set(obs) == {0, 2}
    check(obs[0], NORTH, NORTH.length)
    check(obs[2], EAST, EAST.length, front=False)


def test_panorama_seam_behind_the_camera_does_not_split_a_facade():
    shot = Shot(0.0, 0.0, 1.6, heading_deg=180.0, width=1200, height=600, projection="equirectangular")
    obs = measure([NORTH], shot)  # NORTH straddles the panorama's left/right edge
    check(obs[0], NORTH, NORTH.length)


def test_car_hiding_the_base_uses_the_camera_height():
    car = Box(-2.0, 12.0, 4.5, 1.8, 1.5, label=CAR)
    wide_car = Box(-8.0, 16.0, 16.0, 1.5, 1.6, label=CAR)  # hides the whole base of the facade
    obs = measure([NORTH, car, wide_car], Shot(0.0, 0.0, 1.6, 0.0, 640, 480, 70.0))
    assert obs[0]["height_base"] == "camera height"
    assert obs[0]["height_m"] == pytest.approx(NORTH.height, rel=0.01)
    assert obs[0]["floors"] == NORTH.storeys
    assert set(obs) == {0}  # cars are not in the footprints


def test_facade_cut_by_a_tree_is_measured_as_incomplete():
    tree = Box(3.0, 14.0, 4.0, 2.0, 12.0, label=VEGETATION)  # covers the facade's east end entirely
    obs = measure([NORTH, tree], Shot(0.0, 0.0, 1.6, 0.0, 640, 480, 70.0))
    assert not obs[0]["width_complete"]
    assert obs[0]["width_m"] < NORTH.length - 1.0
    assert obs[0]["height_m"] == pytest.approx(NORTH.height, rel=0.01)


def test_map_scale_factor_converts_grid_metres_to_true_metres():
    k = 1.001  # the frame's metres are k true metres (UTM scale factor)
    shot = Shot(0.0, 0.0, 1.6, 0.0, 640, 480, 70.0)
    labels, _ = render([NORTH], shot)
    true = Footprints.from_geometries([shapely.Polygon(NORTH.corners())])
    grid = Footprints.from_geometries([shapely.affinity.scale(true.polygons[0], k, k, origin=(0, 0))])
    (ref,) = measure_photo(labels, ROLES, camera_for(shot), 0.0, 0.0, 1.6, true)
    (obs,) = measure_photo(labels, ROLES, camera_for(shot), 0.0, 0.0, 1.6, grid, scale_factor=k)
    assert obs.distance_m == pytest.approx(ref.distance_m, rel=1e-4)
    assert obs.width_m == pytest.approx(ref.width_m, rel=1e-3)
    assert obs.height_m == pytest.approx(ref.height_m, rel=1e-3)


def test_too_few_columns_are_not_measured():
    obs = measure([NORTH], Shot(0.0, 0.0, 1.6, 0.0, 64, 48, 70.0), min_columns=200)
    assert obs == {}


def test_cast_rays_nearest_footprint_wins():
    near = shapely.box(-2, 5, 2, 8)
    far = shapely.box(-30, 20, 30, 25)
    fp = Footprints.from_geometries([far, near], ids=[7, 8])
    hits = cast_rays(fp, 0.0, 0.0, np.radians([0.0, 45.0, 180.0]), max_distance=100.0)
    assert list(hits.building) == [1, 0, -1]
    assert hits.distance[0] == pytest.approx(5.0) and hits.distance[1] == pytest.approx(20 * math.sqrt(2))
    assert hits.behind[0] and not hits.behind[1]
    assert hits.incidence[1] == pytest.approx(math.radians(45.0))
    assert fp.ids[hits.building[0]] == 8


def test_collinear_vertices_form_one_wall():
    poly = shapely.Polygon([(0, 0), (3, 0), (6, 0.05), (10, 0), (10, 8), (0, 8)])
    fp = Footprints.from_geometries([poly], simplify_m=0.0)
    assert len(fp.walls) == 4
    assert fp.walls[:, 4].max() == pytest.approx(10.0)


def test_level_grid_of_a_level_panorama_is_the_panorama():
    labels = np.random.default_rng(0).integers(0, 9, (60, 120)).astype(np.uint8)
    grid = level_grid(labels, Camera(120, 60, "equirectangular", heading_deg=0.0))
    assert np.array_equal(grid.labels, labels)


def test_floors_from_window_rows():
    bins = np.arange(0, 120)  # 12 m in 0.1 m bins
    window = np.where(((bins * 0.1) % 3.0 > 1.0) & ((bins * 0.1) % 3.0 < 2.2), 0.4, 0.0)
    facade = np.ones_like(window)
    assert floors_from_profile(window, facade, 12.0)[:2] == (4.0, pytest.approx(3.0, abs=0.05))
    ground_floor_shop = window.copy()
    ground_floor_shop[:30] = 0.0  # no windows on the ground floor: rhythm and height still give 4
    assert floors_from_profile(ground_floor_shop, facade, 12.0)[0] == 4.0
    assert math.isnan(floors_from_profile(np.zeros(50), np.ones(50), 5.0)[0])


def test_class_roles_need_building_and_sky():
    with pytest.raises(InputError, match="no sky class"):
        ClassRoles.from_names(["building", "window"])
    with pytest.raises(InputError, match="no building"):
        ClassRoles.from_names(["sky", "window"])
    assert ClassRoles.from_names(CLASSES).top == (SKY,)


def test_speckle_noise_in_the_labels_does_not_move_the_measurements():
    shot = Shot(0.0, 0.0, 1.6, 0.0, 640, 480, 70.0)
    labels, _ = render([NORTH], shot)
    rng = np.random.default_rng(1)
    noisy = labels.copy()
    speckles = rng.random(labels.shape) < 0.01
    noisy[speckles] = rng.integers(0, len(CLASSES), speckles.sum())
    fp = Footprints.from_geometries([shapely.Polygon(NORTH.corners())])
    (obs,) = measure_photo(noisy, ROLES, camera_for(shot), 0.0, 0.0, 1.6, fp)
    assert obs.height_m == pytest.approx(NORTH.height, rel=0.01)
    assert obs.width_m == pytest.approx(NORTH.length, rel=0.05)
    assert obs.floors == NORTH.storeys
