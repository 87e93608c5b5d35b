"""Training datasets: loaders on tiny real files, geographic splits, augmentation with ignore fill."""

from __future__ import annotations

from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from bldgseg.errors import InputError
from bldgseg.palettes import IGNORE_INDEX, LABELMEFACADE_CLASSES, LABELMEFACADE_PALETTE
from bldgseg.train.augment import DEFAULT_AUGMENTATION, build_augmentation
from bldgseg.train.data import Sample, TrainSample
from bldgseg.train.datasets import load_mask_pairs, load_palette_pairs
from bldgseg.train.footprint_samples import load_geotiff_footprints
from bldgseg.train.split import geographic_split
from tests.conftest import write_rgb

X0, Y0 = 500000.0, 100000.0  # EPSG:32636 (UTM 36N), near the equator
NO_COLOUR = {
    "brightness_contrast_p": 0,
    "hsv_p": 0,
    "noise_p": 0,
    "illumination_p": 0,
    "shadow_p": 0,
}


# ------------------------------------------------------------------------------ GeoTIFF + footprints


def _utm_building_geojson(path: Path, x0: float, y0: float, x1: float, y1: float) -> Path:
    """One rectangular footprint given in UTM 36N, written as GeoJSON in EPSG:4326."""
    gdf = gpd.GeoDataFrame(geometry=[box(x0, y0, x1, y1)], crs="EPSG:32636").to_crs("EPSG:4326")
    gdf.to_file(path, driver="GeoJSON")
    return path


@pytest.fixture
def footprint_scene(tmp_path: Path) -> tuple[Path, Path]:
    """200x200 px at 0.15 m (30 m square); the right quarter is outside the valid mask; a 6 m x 9 m building."""
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.full((3, 200, 200), 120, np.uint8)
    valid = np.ones((200, 200), bool)
    valid[:, 150:] = False
    write_rgb(folder / "scene.tif", rgb, transform=from_origin(X0, Y0, 0.15, 0.15), mask=valid)
    (folder / "broken.tif").write_bytes(b"not a tiff at all")
    # 6 m wide (20 px at 0.3 m), 9 m tall (30 px): x 3..9 m, y -12..-3 m from the origin.
    footprints = _utm_building_geojson(
        tmp_path / "buildings.geojson", X0 + 3.0, Y0 - 12.0, X0 + 9.0, Y0 - 3.0
    )
    return folder, footprints


def test_geotiff_footprints_area_tiles_and_ignore(footprint_scene: tuple[Path, Path]) -> None:
    folder, footprints = footprint_scene
    samples = load_geotiff_footprints([folder], footprints, target_gsd=0.3, tile_px=64, block_tiles=1)

    assert [s.path.name for s in samples.skipped] == ["broken.tif"]
    assert len(samples) == 4  # 100x100 px at 0.3 m cut into 2x2 tiles of 50 px
    assert all(isinstance(s, TrainSample) and isinstance(s, Sample) for s in samples)
    assert all(s.image.shape == (50, 50, 3) and s.mask.shape == (50, 50) for s in samples)
    assert len({s.group for s in samples}) == 4
    building = sum(int((s.mask == 1).sum()) for s in samples)
    assert abs(building - 20 * 30) <= 30  # within one pixel row/column of 600
    first = next(s for s in samples if s.source.endswith(":0:0"))
    rows, cols = np.nonzero(first.mask == 1)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 39, 10, 29)

    right = [s for s in samples if s.source.endswith(":1")]
    for s in right:  # source columns 150..200 -> tile columns 25..50 are outside the valid mask
        assert (s.mask[:, 25:] == IGNORE_INDEX).all() and (s.image[:, 25:] == 0).all()
        assert (s.mask[:, :25] != IGNORE_INDEX).all() and (s.image[:, :25] == 120).all()
    lon0, lat0, lon1, lat1 = first.bounds
    assert 32.9 < lon0 < lon1 < 33.1 and 0.8 < lat0 < lat1 < 1.0


def test_geotiff_footprints_groups_blocks_and_no_overlap(footprint_scene: tuple[Path, Path], tmp_path: Path):
    folder, _ = footprint_scene
    far = _utm_building_geojson(tmp_path / "far.geojson", X0 + 5000, Y0 - 5000, X0 + 5010, Y0 - 4990)
    with pytest.raises(InputError, match="none of the 1 footprints overlaps"):
        load_geotiff_footprints([folder / "scene.tif"], far, target_gsd=0.3, tile_px=64)
    near = _utm_building_geojson(tmp_path / "near.geojson", X0 + 3, Y0 - 12, X0 + 9, Y0 - 3)
    samples = load_geotiff_footprints([folder / "scene.tif"], near, target_gsd=0.3, tile_px=64)
    assert {s.group for s in samples} == {"scene:0:0"}  # 2x2 tiles fall into one 4x4 block


def test_geotiff_footprints_keep_touching_buildings_apart_as_instances(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    write_rgb(
        folder / "scene.tif", np.full((3, 100, 100), 120, np.uint8), transform=from_origin(X0, Y0, 0.3, 0.3)
    )
    # two 6 m x 9 m houses sharing a wall at x = 9 m
    houses = [box(X0 + 3.0, Y0 - 12.0, X0 + 9.0, Y0 - 3.0), box(X0 + 9.0, Y0 - 12.0, X0 + 15.0, Y0 - 3.0)]
    path = tmp_path / "houses.geojson"
    gpd.GeoDataFrame(geometry=houses, crs="EPSG:32636").to_crs("EPSG:4326").to_file(path, driver="GeoJSON")
    (sample,) = load_geotiff_footprints([folder], path, target_gsd=0.3)
    ids = sample.instances
    assert ids is not None and ids.dtype == np.int32
    assert np.array_equal(ids > 0, sample.mask == 1)  # the union is the semantic mask
    values, counts = np.unique(ids[ids > 0], return_counts=True)
    assert len(values) == 2 and abs(counts[0] - 600) <= 30 and abs(counts[1] - 600) <= 30
    left, right = (ids[20, 15], ids[20, 45])
    assert left != right and left > 0 and right > 0
    assert (
        load_mask_pairs(*_write_pair_folders(tmp_path))[0].instances is None
    )  # masks cannot tell them apart


# ------------------------------------------------------------------------------------ mask pairs


def _write_pair_folders(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "img", tmp_path / "msk"
    images.mkdir()
    masks.mkdir()
    for name, suffix in (("tile_r01_c01", ".mask"), ("tile_r01_c02", "_mask"), ("tile_r02_c01", "")):
        image = np.zeros((40, 40, 3), np.uint8)
        image[10:30, 10:20] = (40, 40, 200)  # BGR for cv2: red
        mask = np.zeros((40, 40), np.uint8)
        mask[10:30, 10:20] = 255
        cv2.imwrite(str(images / f"{name}.png"), image)
        cv2.imwrite(str(masks / f"{name}{suffix}.png"), mask)
    cv2.imwrite(str(images / "unlabelled.png"), np.zeros((40, 40, 3), np.uint8))
    return images, masks


def test_mask_pairs_match_by_stem_and_binarise(tmp_path: Path) -> None:
    images, masks = _write_pair_folders(tmp_path)
    samples = load_mask_pairs(images, masks, group_pattern=r"_r(\d+)_")
    assert sorted(s.source for s in samples) == ["tile_r01_c01.png", "tile_r01_c02.png", "tile_r02_c01.png"]
    assert [p.path.name for p in samples.skipped] == ["unlabelled.png"]
    for s in samples:
        assert set(np.unique(s.mask).tolist()) == {0, 1}
        assert int(s.mask.sum()) == 200 and s.mask.shape == s.image.shape[:2] == (40, 40)
        assert (s.image[s.mask == 1] == (200, 40, 40)).all()  # RGB order, aligned with the mask
        assert s.bounds is None
    assert sorted(s.group for s in samples) == ["01", "01", "02"]

    half = load_mask_pairs(images, masks, target_gsd=0.3, source_gsd=0.15)
    assert all(s.image.shape == (20, 20, 3) and int(s.mask.sum()) == 50 for s in half)


def test_mask_pairs_need_source_gsd_without_georeferencing(tmp_path: Path) -> None:
    images, masks = _write_pair_folders(tmp_path)
    with pytest.raises(InputError, match="source_gsd"):
        load_mask_pairs(images, masks, target_gsd=0.3)


def test_mask_pairs_geotiff_uses_its_own_gsd(tmp_path: Path) -> None:
    images, masks = tmp_path / "img", tmp_path / "msk"
    images.mkdir()
    masks.mkdir()
    write_rgb(images / "a.tif", np.full((3, 60, 60), 90, np.uint8), transform=from_origin(X0, Y0, 0.15, 0.15))
    mask = np.zeros((60, 60), np.uint8)
    mask[0:20, 0:40] = 1
    profile = dict(driver="GTiff", width=60, height=60, count=1, dtype="uint8", crs="EPSG:32636")
    profile["transform"] = from_origin(X0, Y0, 0.15, 0.15)
    with rasterio.open(masks / "a_mask.tif", "w", **profile) as ds:
        ds.write(mask, 1)
    (sample,) = load_mask_pairs(images, masks, target_gsd=0.3, source_gsd=99.0)  # source_gsd not used
    assert sample.mask.shape == (30, 30) and int((sample.mask == 1).sum()) == 10 * 20
    assert sample.bounds is not None


# ---------------------------------------------------------------------------------- palette labels


def test_palette_pairs_map_colours_and_ignore_unknown(tmp_path: Path) -> None:
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    label = np.zeros((30, 30, 3), np.uint8)  # RGB
    label[:10] = (0, 128, 128)  # sky
    label[10:25] = (128, 0, 0)  # building
    label[12:16, 5:9] = (0, 0, 128)  # window
    label[25:] = (1, 2, 3)  # not in the palette
    cv2.imwrite(str(images / "a.jpg"), np.full((30, 30, 3), 128, np.uint8))
    cv2.imwrite(str(labels / "a.png"), cv2.cvtColor(label, cv2.COLOR_RGB2BGR))
    # 16-bit RGBA, as LabelMeFacade stores its labels (128 -> 32896)
    cv2.imwrite(str(images / "b.jpg"), np.full((30, 30, 3), 128, np.uint8))
    wide = np.dstack([cv2.cvtColor(label, cv2.COLOR_RGB2BGR), np.full((30, 30), 255, np.uint8)])
    cv2.imwrite(str(labels / "b.png"), wide.astype(np.uint16) * 257)

    samples = load_palette_pairs(images, labels, LABELMEFACADE_PALETTE, LABELMEFACADE_CLASSES)
    assert [s.source for s in samples] == ["a.jpg", "b.jpg"]
    sky, building, window = (LABELMEFACADE_CLASSES.index(c) for c in ("sky", "building", "window"))
    for s in samples:
        assert (s.mask[:10] == sky).all()
        assert (s.mask[25:] == IGNORE_INDEX).all()
        assert (s.mask[12:16, 5:9] == window).all()
        assert int((s.mask == building).sum()) == 15 * 30 - 16


def test_labelmefacade_palette_is_consistent() -> None:
    assert len(LABELMEFACADE_PALETTE) == len(LABELMEFACADE_CLASSES) == 9
    assert sorted(LABELMEFACADE_PALETTE.values()) == list(range(9))
    assert LABELMEFACADE_CLASSES[LABELMEFACADE_PALETTE[(128, 0, 0)]] == "building"
    assert LABELMEFACADE_CLASSES[LABELMEFACADE_PALETTE[(0, 0, 128)]] == "window"


def test_palette_rejects_class_id_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="out of range"):
        load_palette_pairs(tmp_path, tmp_path, {(0, 0, 0): 3}, ["a", "b"])


# ------------------------------------------------------------------------------------------- split


def _grid_samples() -> list[TrainSample]:
    """12 groups of 1-4 tiny samples on a 0.01 degree grid (group k spans lon k*0.01)."""
    rng = np.random.default_rng(1)
    out = []
    for g in range(12):
        for i in range(int(rng.integers(1, 5))):
            lon = 30.0 + g * 0.01 + i * 0.001
            out.append(
                TrainSample(
                    np.zeros((2, 2, 3), np.uint8),
                    np.zeros((2, 2), np.uint8),
                    f"g{g}_{i}",
                    group=f"g{g}",
                    bounds=(lon, 0.0, lon + 0.0005, 0.0005),
                )
            )
    return out


def test_geographic_split_never_shares_a_group() -> None:
    samples = _grid_samples()
    for seed in range(20):
        train, val = geographic_split(samples, val_fraction=0.25, seed=seed)
        assert train and val and len(train) + len(val) == len(samples)
        assert not {s.group for s in train} & {s.group for s in val}
        assert len(val) >= 0.25 * len(samples)
    first = geographic_split(samples, 0.25, seed=3)
    again = geographic_split(samples, 0.25, seed=3)
    assert [s.source for s in first[1]] == [s.source for s in again[1]]


def test_geographic_split_val_region_takes_whole_groups() -> None:
    samples = _grid_samples()
    # Only the first sample of g3 has its centre in this box; the whole of g3 goes to validation, with g4.
    region = (30.0295, -1.0, 30.0411, 1.0)
    train, val = geographic_split(samples, val_region=region)
    assert {s.group for s in val} == {"g3", "g4"}
    assert len(val) == sum(s.group in ("g3", "g4") for s in samples)
    assert not {s.group for s in train} & {"g3", "g4"}


def test_geographic_split_errors_say_how_to_fix() -> None:
    one_group = [
        TrainSample(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), f"s{i}", group="g")
        for i in range(5)
    ]
    with pytest.raises(InputError, match="more data.*--val-fraction"):
        geographic_split(one_group)
    with pytest.raises(InputError, match="training set would be empty"):
        geographic_split(_grid_samples(), val_region=(-180, -90, 180, 90))


# -------------------------------------------------------------------------------------- augmentation


def test_augmentation_fills_ignore_in_padded_and_rotated_areas() -> None:
    small = build_augmentation(64, {**NO_COLOUR, "rotate": [45, 45], "scale": [0.5, 0.5], "affine_p": 1})
    small.set_random_seed(0)
    image = np.full((48, 48, 3), 100, np.uint8)
    mask = np.ones((48, 48), np.uint8)
    for _ in range(5):
        out = small(image=image, mask=mask)
        assert out["mask"].shape == (64, 64) and out["image"].shape == (64, 64, 3)
        values = set(np.unique(out["mask"]).tolist())
        assert values == {1, IGNORE_INDEX}  # nearest interpolation, padding and corners are 255, never 0
        outside = out["image"][out["mask"] == IGNORE_INDEX]
        assert (outside == 0).all(axis=1).mean() > 0.9  # only the interpolated seam is not exactly 0

    large = build_augmentation(64, {**NO_COLOUR, "rotate": 0, "scale": 0})
    out = large(image=np.full((100, 100, 3), 100, np.uint8), mask=np.ones((100, 100), np.uint8))
    assert set(np.unique(out["mask"]).tolist()) == {1}  # no transform needs padding: no ignore pixels


def test_augmentation_keeps_image_and_mask_aligned() -> None:
    transform = build_augmentation(64, {**NO_COLOUR, "rotate": 30, "scale": [0.8, 1.2], "affine_p": 1})
    transform.set_random_seed(1)
    image = np.zeros((96, 96, 3), np.uint8)
    mask = np.zeros((96, 96), np.uint8)
    image[30:60, 40:70] = 255
    mask[30:60, 40:70] = 1
    checked = 0
    for _ in range(20):
        out = transform(image=image, mask=mask)
        bright, square = out["image"].mean(axis=2) > 127, out["mask"] == 1
        if square.sum() < 50:
            continue
        checked += 1
        assert (bright & square).sum() / (bright | square).sum() > 0.9
    assert checked >= 5


def test_augmentation_config_is_plain_dict() -> None:
    transform = build_augmentation(
        32, {"rotate": 30, "scale": [0.85, 1.15], "brightness": 0.2, "vflip_p": 0.5}
    )
    names = {type(t).__name__ for t in transform.transforms}
    assert {"Affine", "RandomRotate90", "HorizontalFlip", "VerticalFlip", "RandomCrop"} <= names
    assert {
        "RandomBrightnessContrast",
        "HueSaturationValue",
        "GaussNoise",
        "Illumination",
        "RandomShadow",
    } <= names
    affine = next(t for t in transform.transforms if type(t).__name__ == "Affine")
    assert affine.fill_mask == 255 and affine.mask_interpolation == cv2.INTER_NEAREST
    out = transform(image=np.zeros((20, 20, 3), np.uint8), mask=np.zeros((20, 20), np.uint8))
    assert out["image"].shape == (32, 32, 3)
    assert set(DEFAULT_AUGMENTATION) >= {"rotate", "scale", "brightness"}
    with pytest.raises(InputError, match="unknown key"):
        build_augmentation(32, {"rotation": 30})
