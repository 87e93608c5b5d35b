"""Building instances: targets from footprints, grouping, exact polygons, seams, and the instance model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import torch
from affine import Affine
from rasterio.transform import from_origin
from scipy import ndimage
from shapely.geometry import box

from bldgseg.errors import InputError
from bldgseg.instance_targets import (
    TARGET_CHANNELS,
    connected_instances,
    contact_pixels,
    gap_between_buildings,
    instance_centres,
    instance_target_stack,
    instance_targets,
    rasterize_instances,
)
from bldgseg.instances import group_instances, match_instances, merge_fragments, resample_instance_maps
from bldgseg.models import ModelCard, build_model, load_checkpoint, save_checkpoint
from bldgseg.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from bldgseg.models.panoptic import (
    OUTPUT_CHANNELS,
    PanopticBuildingNet,
    instance_maps,
    register_instance_architectures,
    split_outputs,
    unflip_instance_maps,
)
from bldgseg.train.losses import instance_loss, make_loss, training_loss
from bldgseg.train.trainer import TrainConfig
from bldgseg.vectorize import label_image_to_polygons, mask_to_polygons

register_instance_architectures()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is fastest, and avoids OpenMP spin-waiting on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CRS = "EPSG:32636"
GSD = 0.5
X0, Y0 = 500_000.0, 100_000.0
TRANSFORM = from_origin(X0, Y0, GSD, GSD)


def pixel_box(r0: float, c0: float, r1: float, c1: float) -> shapely.Polygon:
    """Map-coordinate box of pixel rows r0..r1 and columns c0..c1 (end-exclusive) of TRANSFORM."""
    return box(X0 + c0 * GSD, Y0 - r1 * GSD, X0 + c1 * GSD, Y0 - r0 * GSD)


def perfect_labels(labels: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    """Targets of ``labels`` fed back as predictions into group_instances."""
    center, offsets, _ = instance_targets(labels, sigma)
    return group_instances((labels > 0).astype(np.float32), center, offsets)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """The two label images split the pixels identically (up to renumbering)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


# ------------------------------------------------------------------------------------ adjacent buildings


@pytest.mark.parametrize(
    "edge_shift", [0.0, 0.25], ids=["edge-on-pixel-border", "edge-through-pixel-centres"]
)
def test_adjacent_rectangles_give_two_polygons_whose_union_is_the_mask(edge_shift):
    shared_x = X0 + 30 * GSD + edge_shift
    a = box(X0 + 10 * GSD, Y0 - 36 * GSD, shared_x, Y0 - 12 * GSD)
    b = box(shared_x, Y0 - 40 * GSD, X0 + 45 * GSD, Y0 - 16 * GSD)
    assert a.intersection(b).area == 0 and a.touches(b)

    labels = rasterize_instances([a, b], TRANSFORM, (64, 64))
    mask = labels > 0
    assert sorted(np.unique(labels)) == [0, 1, 2]
    # every pixel of the union is burned exactly once: no gap along the shared edge
    union_raster = rasterize_instances([shapely.union(a, b)], TRANSFORM, (64, 64))
    assert np.array_equal(mask, union_raster > 0)

    grouped = perfect_labels(labels)
    assert grouped.dtype == np.int32 and grouped.max() == 2
    assert same_partition(grouped, labels)

    polygons = label_image_to_polygons(grouped, TRANSFORM, CRS)
    assert len(polygons) == 2 and polygons.crs.to_epsg() == 32636
    p, q = polygons.geometry
    blob = mask_to_polygons(mask, TRANSFORM, CRS)
    assert len(blob) == 1  # the semantic path merges them
    merged = blob.geometry.iloc[0]
    union = shapely.union(p, q)
    assert union.area == pytest.approx(mask.sum() * GSD * GSD)
    assert p.area + q.area == pytest.approx(mask.sum() * GSD * GSD)
    assert union.symmetric_difference(merged).area == pytest.approx(0.0, abs=1e-9)
    assert p.intersection(q).area == pytest.approx(0.0, abs=1e-9)
    if edge_shift == 0.0:  # grid-aligned footprints come back exactly
        truth = sorted([a, b], key=lambda g: g.centroid.x)
        got = sorted([p, q], key=lambda g: g.centroid.x)
        for t, g in zip(truth, got, strict=True):
            assert t.symmetric_difference(g).area == pytest.approx(0.0, abs=1e-9)


def test_rasterize_keeps_small_buildings_inside_larger_ones_and_skips_empty():
    big = pixel_box(0, 0, 20, 20)
    small = pixel_box(5, 5, 10, 10)
    labels = rasterize_instances([small, None, shapely.Polygon(), big], TRANSFORM, (24, 24))
    assert (labels == 1).sum() == 25 and (labels == 4).sum() == 400 - 25
    assert set(np.unique(labels)) == {0, 1, 4}


# -------------------------------------------------------------------------------------------- targets


def test_gap_between_buildings_separates_touching_roofs_only():
    ids = np.zeros((20, 30), np.int32)
    ids[2:10, 2:12] = 1
    ids[2:10, 12:20] = 2  # shares the edge between columns 11 and 12 with building 1
    ids[14:18, 22:28] = 3  # alone
    mask = (ids > 0).astype(np.uint8)
    mask[0, :] = 255
    contact = contact_pixels(ids, 1)
    assert np.array_equal(np.nonzero(contact.any(axis=0))[0], [11, 12])
    assert contact[2:10, 11].all() and contact[2:10, 12].all() and not contact[14:18].any()
    gapped = gap_between_buildings(mask, ids, 1)
    assert ndimage.label(mask == 1)[1] == 2 and ndimage.label(gapped == 1, np.ones((3, 3)))[1] == 3
    assert (gapped[0] == 255).all() and np.array_equal(gapped[~contact], mask[~contact])
    assert gap_between_buildings(mask, None, 1) is mask and gap_between_buildings(mask, ids, 0) is mask
    assert contact_pixels(ids, 2)[2:10, 10:14].all()  # two pixels on each side


def test_targets_centre_offsets_and_weights():
    labels = np.zeros((40, 40), np.int32)
    labels[5:16, 4:13] = 3  # 11 x 9: centre (10, 8)
    labels[20:30, 20:30] = 7  # 10 x 10: centre of mass 24.5 -> 25
    center, offsets, weights = instance_targets(labels, sigma=4.0)
    assert center.dtype == offsets.dtype == weights.dtype == np.float32
    assert center.shape == (40, 40) and offsets.shape == weights.shape == (2, 40, 40)
    assert center[10, 8] == 1.0 and center[25, 25] == 1.0 and (center < 1).sum() == 40 * 40 - 2
    assert center[10, 12] == pytest.approx(math.exp(-16 / 32))
    assert tuple(offsets[:, 5, 4]) == (5.0, 4.0) and tuple(offsets[:, 29, 29]) == (-4.0, -4.0)
    assert not offsets[:, labels == 0].any()
    assert np.array_equal(weights[1], labels > 0) and weights[0].min() == 1.0
    ignore = np.zeros((40, 40), bool)
    ignore[:, :2] = True
    _, _, weights = instance_targets(labels, ignore=ignore)
    assert not weights[:, ignore].any() and weights[0, :, 2:].min() == 1.0


def test_concave_building_centre_lies_on_the_building():
    labels = np.zeros((40, 48), np.int32)
    labels[5:35, 5:41] = 1
    labels[5:25, 15:31] = 0  # a U open to the top: its centre of mass (21.6, 22.5) is in the courtyard
    ids, centres = instance_centres(labels)
    (r, c) = centres[0]
    assert ids.tolist() == [1] and labels[r, c] == 1
    assert (r, c) == (25, 22)  # the U's pixel nearest to the centre of mass (ties: raster order)
    assert same_partition(perfect_labels(labels), labels)


def test_target_stack_channels_and_ignore():
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12] = 1
    mask[20:, :] = 255
    labels = connected_instances(mask)
    stack = instance_target_stack(mask, labels, sigma=3.0)
    assert stack.shape == (len(TARGET_CHANNELS), 32, 32) and stack.dtype == np.float32
    assert np.array_equal(stack[0], mask.astype(np.float32))
    assert stack[1, 8, 8] == 1.0 and not stack[4:, 20:].any()
    assert np.array_equal(stack[5] > 0, mask == 1)


def test_offsets_and_centres_are_translation_invariant():
    labels = np.zeros((50, 60), np.int32)
    labels[10:25, 12:30] = 1
    labels[10:25, 30:41] = 2
    shifted = np.zeros_like(labels)
    shifted[7:, 3:] = labels[:-7, :-3]
    c1, o1, _ = instance_targets(labels)
    c2, o2, _ = instance_targets(shifted)
    assert np.array_equal(o1[:, :-7, :-3], o2[:, 7:, 3:])
    assert np.array_equal(np.argwhere(c1 == 1) + [7, 3], np.argwhere(c2 == 1))


# ------------------------------------------------------------------------------------------- grouping


def test_group_instances_without_centres_falls_back_to_components():
    prob = np.zeros((30, 30), np.float32)
    prob[2:8, 2:8] = 0.9
    prob[20:25, 20:28] = 0.8
    labels = group_instances(prob, np.zeros_like(prob), np.zeros((2, 30, 30), np.float32))
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert not group_instances(np.zeros_like(prob), prob, np.zeros((2, 30, 30))).any()
    with pytest.raises(ValueError, match="offset"):
        group_instances(prob, prob, np.zeros((30, 30)))


def test_group_instances_top_k_and_max_distance():
    labels = np.zeros((40, 80), np.int32)
    for i in range(4):
        labels[10:30, 20 * i : 20 * i + 20] = i + 1  # four touching houses in a row
    center, offsets, _ = instance_targets(labels, sigma=4.0)
    prob = (labels > 0).astype(np.float32)
    assert group_instances(prob, center, offsets).max() == 4
    assert group_instances(prob, center, offsets, top_k=2).max() == 2  # pixels join the two kept centres
    # with a distance limit, the pixels of the dropped centres become their own (connected) instance
    limited = group_instances(prob, center, offsets, top_k=2, max_distance=2.0)
    assert limited.max() == 3 and (limited > 0).sum() == (labels > 0).sum()


def test_building_cut_by_the_crop_edge_is_not_absorbed_by_its_neighbour():
    labels = np.zeros((40, 140), np.int32)
    labels[10:30, 40:60] = 1
    labels[10:30, 60:140] = 2  # centre at column 100
    center, offsets, _ = instance_targets(labels)
    crop = slice(0, 70)  # cuts building 2; its centre lies outside the crop, its heatmap is ~0 inside
    heat = center[:, crop]
    peaks = np.argwhere((heat == ndimage.maximum_filter(heat, 7)) & (heat > 0.1))
    assert peaks.tolist() == [[20, 50]]  # only building 1's centre: the nearest for building 2's votes
    prob = (labels[:, crop] > 0).astype(np.float32)
    grouped = group_instances(prob, center[:, crop], offsets[:, :, crop])
    assert same_partition(grouped, labels[:, crop])


# ---------------------------------------------------------------------------------------------- seams


def _scene() -> list[shapely.Polygon]:
    u_shape = pixel_box(60, 10, 90, 46).difference(pixel_box(60, 20, 80, 36))
    return [
        pixel_box(20, 56, 50, 70),  # T, left of the seam
        pixel_box(20, 70, 44, 92),  # S, straddles the seam at column 80, touches T
        pixel_box(50, 84, 80, 100),  # P
        pixel_box(50, 100, 76, 130),  # Q, touches P; cut by the left crop's edge
        u_shape,  # concave, left crop only
        pixel_box(10, 140, 30, 156),  # right crop only
    ]


def test_seam_crossing_gives_one_polygon_per_building():
    truth = _scene()
    height, width, seam = 96, 160, 80
    labels = rasterize_instances(truth, TRANSFORM, (height, width))
    center, offsets, _ = instance_targets(labels)
    prob = (labels > 0).astype(np.float32)
    # two chunks: cores [0, 80) and [80, 160) in columns, each read with a 32-pixel halo
    chunks = [((0, seam), (0, seam + 32)), ((seam, width), (seam - 32, width))]
    owned = []
    per_chunk = []
    for (core0, core1), (read0, read1) in chunks:
        cols = slice(read0, read1)
        grouped = group_instances(prob[:, cols], center[:, cols], offsets[:, :, cols])
        polygons = label_image_to_polygons(grouped, TRANSFORM * Affine.translation(read0, 0), CRS)
        per_chunk.append(list(polygons.geometry))
        x0, x1 = X0 + core0 * GSD, X0 + core1 * GSD
        owned += [g for g in polygons.geometry if x0 <= g.representative_point().x < x1]
    # the building crossing the seam is one instance in each chunk, with the same outline in map coordinates
    seam_building = truth[1]
    matches = [[g for g in chunk if g.intersects(seam_building.centroid)] for chunk in per_chunk]
    assert [len(m) for m in matches] == [1, 1]
    assert matches[0][0].symmetric_difference(matches[1][0]).area == pytest.approx(0.0, abs=1e-9)
    # after the ownership rule every building comes out once, whole and exact, and nothing else does
    assert len(owned) == len(truth)
    for building in truth:
        hits = [g for g in owned if g.intersection(building).area > 0]
        assert len(hits) == 1
        assert hits[0].symmetric_difference(building).area == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------------- model, loss, flips


def _toy_batch(n: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    images = rng.normal(0, 0.3, (n, 3, size, size)).astype(np.float32)
    targets = []
    for i in range(n):
        labels = np.zeros((size, size), np.int32)
        labels[8 + i : 30, 6:26] = 1
        labels[8 + i : 30, 26:50] = 2
        labels[38:58, 16 + i : 40] = 3
        images[i, 0][labels > 0] += 1.5  # roofs brighter in the first channel
        images[i, 1][labels == 2] -= 1.0
        targets.append(instance_target_stack((labels > 0).astype(np.uint8), labels, sigma=4.0))
    return torch.from_numpy(images), torch.from_numpy(np.stack(targets))


def test_instance_loss_is_zero_on_perfect_instance_maps():
    _, targets = _toy_batch()
    perfect = targets[:, :4].clone()
    perfect[:, 0] = torch.where(targets[:, 0] > 0, 20.0, -20.0)  # confident logits
    base = make_loss(TrainConfig())
    total, parts = instance_loss(perfect, targets, base, return_parts=True)
    assert parts["center"] == 0.0 and parts["offset"] == 0.0 and parts["semantic"] < 0.01
    worse = perfect.clone()
    worse[:, 2] += 3.0  # every dy off by 3 pixels
    _, parts = instance_loss(worse, targets, base, return_parts=True)
    assert parts["offset"] == pytest.approx(3.0)
    outputs = split_outputs(perfect)
    dict_targets = {
        "semantic": targets[:, :1],
        "center": targets[:, 1:2],
        "offset": targets[:, 2:4],
        "center_weight": targets[:, 4:5],
        "offset_weight": targets[:, 5:6],
    }
    assert float(instance_loss(outputs, dict_targets, base)) == pytest.approx(float(total))


def test_unflip_restores_maps_and_offset_signs():
    labels = np.zeros((33, 41), np.int32)
    labels[3:14, 5:20] = 1  # odd sizes: integer centres, so flipping commutes with the centre rule
    labels[3:14, 20:31] = 2
    labels[18:29, 9:24] = 3
    center, offsets, _ = instance_targets(labels)
    maps = torch.from_numpy(np.concatenate([center[None], offsets]))
    for dims in [(3,), (2,), (2, 3)]:
        flipped = np.flip(labels, axis=tuple(d - 2 for d in dims)).copy()
        center, offsets, _ = instance_targets(flipped)
        flipped_maps = torch.from_numpy(np.concatenate([center[None], offsets]))
        stacked = torch.cat([torch.zeros(1, 1, 33, 41), flipped_maps[None]], dim=1)
        restored = unflip_instance_maps(stacked, dims)[0, 1:]
        assert torch.allclose(restored, maps, atol=1e-6), dims
    logits = torch.cat([torch.zeros(1, 1, 33, 41), maps[None]], dim=1)
    assert torch.equal(instance_maps(logits)[:, 1:], maps[None]) and instance_maps(logits)[0, 0, 0, 0] == 0.5


def test_instance_model_builds_from_the_registry_and_runs_forward():
    # FPN here (heads at 1/4, upsampled); the training test below runs the U-Net variant (heads at full size)
    model = build_model("panoptic_fpn", "tu-efficientnet_lite0").eval()
    assert isinstance(model, PanopticBuildingNet) and OUTPUT_CHANNELS[0] == "semantic"
    with torch.inference_mode():
        out = model(torch.zeros(2, 3, 128, 128))
    assert out.shape == (2, 4, 128, 128) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="divisible"):
        model(torch.zeros(1, 3, 70, 64))
    with pytest.raises(ValueError, match="classes=1"):
        PanopticBuildingNet(classes=2)


def test_instance_model_trains_and_round_trips_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("panoptic_unet", "tu-efficientnet_lite0").train()
    images, targets = _toy_batch()
    base = make_loss(TrainConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stem = model.encoder.model.conv_stem.weight
    before = stem.detach().clone()
    losses = []
    for _ in range(3):
        loss = training_loss(model, images, targets, base)
        optimizer.zero_grad()
        loss.backward()
        assert stem.grad is not None and stem.grad.abs().sum() > 0
        assert model.center_head[-1].weight.grad.abs().sum() > 0
        assert model.offset_head[-1].weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and min(losses[1:]) < losses[0]
    assert not torch.equal(before, stem.detach())

    card = ModelCard(
        name="inst", architecture="panoptic_unet", encoder="tu-efficientnet_lite0", head="instance"
    )
    weights = save_checkpoint(model, card, tmp_path / "inst.safetensors")
    loaded, loaded_card = load_checkpoint(weights)
    assert loaded_card.head == "instance" and isinstance(loaded, PanopticBuildingNet)
    with torch.inference_mode():
        out = loaded(images[:1])
    assert out.shape == (1, 4, 64, 64)


# ------------------------------------------------------------------------------ chunk post-processing


def test_a_plateau_peak_is_one_centre():
    labels = np.zeros((40, 60), np.int32)
    labels[5:35, 5:30] = 1
    labels[5:35, 30:55] = 2
    center, offsets, _ = instance_targets(labels)
    # enlarge 2x as the pipeline does for a coarser input: each peak becomes a 2x2 plateau
    maps = np.concatenate([(labels > 0)[None].astype(np.float32), center[None], offsets])
    big = resample_instance_maps(np.repeat(np.repeat(maps, 2, axis=1), 2, axis=2), (80, 120))
    big[2:] *= 2.0  # nearest-style enlargement: offsets in the new pixels
    grouped = group_instances(big[0], big[1], big[2:4], top_k=None)
    assert grouped.max() == 2
    assert same_partition(grouped, np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1))


def test_resampled_offsets_are_in_the_new_pixels():
    maps = np.zeros((4, 10, 20), np.float32)
    maps[2], maps[3] = 3.0, -5.0
    out = resample_instance_maps(maps, (20, 10))
    assert out.shape == (4, 20, 10)
    assert np.allclose(out[2], 6.0) and np.allclose(out[3], -2.5)
    assert resample_instance_maps(maps, (10, 20)) is not None and np.array_equal(
        resample_instance_maps(maps, (10, 20)), maps
    )


def test_stray_pieces_join_their_neighbour_or_become_buildings_and_no_pixel_is_lost():
    labels = np.zeros((30, 40), np.int32)
    labels[2:20, 2:18] = 1
    labels[2:20, 18:36] = 2
    labels[5:7, 30:32] = 1  # 4-pixel stray piece of 1 inside 2: joins 2
    labels[24:29, 2:12] = 2  # 50-pixel stray piece of 2, apart from everything: a building of its own
    labels[22:23, 30:32] = 1  # 2-pixel stray piece touching nothing: kept, as its own label
    out = merge_fragments(labels, min_pixels=16)
    assert np.array_equal(out > 0, labels > 0)
    assert (out[5:7, 30:32] == 2).all()
    assert len(np.unique(out[24:29, 2:12])) == 1 and out[25, 5] not in (1, 2)
    assert out[22, 30] not in (0, 1, 2)
    assert (out[2:20, 2:18] == 1).all()
    values = np.unique(out[out > 0])
    assert len(values) == 4


def test_match_instances_counts_one_to_one_matches():
    truth = np.zeros((20, 50), np.int32)
    truth[2:18, 2:17], truth[2:18, 17:32], truth[2:18, 32:47] = 1, 2, 3
    merged = (truth > 0).astype(np.int32)  # one blob over all three: IoU 1/3 with each
    assert match_instances(truth, merged) == (0, 3, 1)
    assert match_instances(truth, truth * 7) == (3, 3, 3)
    shifted = np.roll(truth, 3, axis=1)  # IoU 12/18 each
    assert match_instances(truth, shifted) == (3, 3, 3)
    halves = np.where(truth == 1, 1, 0) + np.where(truth > 1, 2, 0)  # 2 and 3 merged: IoU exactly 0.5
    assert match_instances(truth, halves) == (1, 3, 2)


def test_predictor_takes_offsets_from_the_window_a_pixel_lies_deepest_in():
    from bldgseg.inference import Predictor
    from tests.conftest import ROOF_SHADES, RoofInstanceNet, scene

    boxes = [(40, 30, 71, 55), (40, 55, 65, 85), (90, 100, 121, 123), (90, 123, 111, 150)]
    rgb = scene(160, 200, boxes, ROOF_SHADES)
    model = RoofInstanceNet()
    with torch.inference_mode():
        whole = model(
            (torch.from_numpy(rgb)[None].float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        )[0].numpy()
    card = ModelCard(
        name="t", architecture="roof-instance-test", encoder="none", tile_size=96, overlap=64, head="instance"
    )
    for tta in (False, True):
        maps = Predictor(model, card, "cpu", tta=tta).predict_instances(rgb, np.ones((160, 200), bool))
        roofs = whole[0] > 0
        # every building lies whole in each window it reaches into by less than half the overlap
        assert np.allclose(maps[2:, roofs], whole[2:, roofs], atol=0.5 if tta else 1e-6)
        labels = group_instances(maps[0], maps[1], maps[2:4], top_k=None)
        assert labels.max() == 4
    with pytest.raises(InputError, match="instance model"):
        semantic = ModelCard(name="s", architecture="roof-instance-test", encoder="none")
        Predictor(model, semantic, "cpu").predict_instances(rgb, np.ones((160, 200), bool))


def test_pixels_never_join_a_centre_of_another_blob():
    labels = np.zeros((30, 60), np.int32)
    labels[5:25, 5:25] = 1
    labels[5:25, 35:55] = 2  # a separate blob
    prob = (labels > 0).astype(np.float32)
    center, offsets, _ = instance_targets(labels)
    wrong = offsets.copy()
    wrong[1][labels == 1] += 30.0  # blob 1's votes land on blob 2's centre
    grouped = group_instances(prob, center, wrong)
    assert same_partition(grouped, labels)
    # a blob without a centre of its own stays one building, not a piece of its neighbour's
    center[labels == 1] = 0.0
    grouped = group_instances(prob, center, wrong)
    assert same_partition(grouped, labels)
