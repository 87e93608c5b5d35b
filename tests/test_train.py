"""Training: offline encoder weights, a tiny real training run, resume, and the train CLI."""

import json
import math

import numpy as np
import pytest
import timm
import torch
from scipy import ndimage
from typer.testing import CliRunner

from bldgseg.cli import app
from bldgseg.errors import InputError
from bldgseg.instance_targets import TARGET_CHANNELS
from bldgseg.models import load_checkpoint
from bldgseg.models.panoptic import PanopticBuildingNet
from bldgseg.models.pretrained import lite_checkpoint_path, map_lite_state_dict
from bldgseg.train.augment import build_augmentation
from bldgseg.train.data import TrainSample
from bldgseg.train.trainer import TrainConfig, TrainingSet, init_model, train
from bldgseg.train.validation import validate
from tests.conftest import ROOF_SHADES, SAMPLE, RoofInstanceNet, scene


def test_offline_efficientnet_lite0_maps_all_296_tensors_into_timm():
    reference = timm.create_model("efficientnet_lite0")
    source = torch.load(lite_checkpoint_path(0), map_location="cpu", weights_only=True)
    mapped = map_lite_state_dict(source, list(reference.state_dict()))
    assert len(mapped) == 296
    result = reference.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # the ImageNet classifier is real: a constant mid-grey image is not classified uniformly
    with torch.inference_mode():
        logits = reference.eval()(torch.zeros(1, 3, 224, 224))
    assert torch.softmax(logits, 1).max() > 5 / 1000


def toy_samples(n: int, seed: int) -> list[TrainSample]:
    """Bright squares (buildings) on a textured dark ground, one group per sample."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.integers(20, 80, (96, 96, 3), dtype=np.uint8)
        mask = np.zeros((96, 96), np.uint8)
        for _ in range(3):
            r, c = rng.integers(0, 70, 2)
            image[r : r + 20, c : c + 20] = (230, 200, 180)
            mask[r : r + 20, c : c + 20] = 1
        out.append(TrainSample(image, mask, f"toy{i}", group=f"g{i}"))
    return out


def tiny_config(**kw) -> TrainConfig:
    base = dict(
        name="toy",
        crop=64,
        batch_size=4,
        epochs=3,
        steps_per_epoch=6,
        lr=3e-3,
        device="cpu",
        encoder_weights="imagenet",
        tile_size=64,
        overlap=16,
        augmentation={"affine_p": 0},
    )
    base.update(kw)
    return TrainConfig(**base)


@torch.inference_mode()
def evaluate_checkpoint(path, samples: list[TrainSample]) -> dict[str, float]:
    """Pixel IoU (instance models: also instance F1 and count error) of a saved checkpoint on whole samples.

    Computed here from the checkpoint's raw outputs (its card's normalisation and threshold, IoU >= 0.5 matching
    of instances written out), not by ``bldgseg.train.validation``, so the card's metrics are checked against
    an independent measurement of the weights it was saved with.
    """
    from bldgseg.defaults import DEFAULT_MIN_AREA_M2
    from bldgseg.instances import label_instances

    model, card = load_checkpoint(path)
    model.eval()
    mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (card.mean, card.std))
    inter = union = matched = truths = predictions = 0
    for sample in samples:
        assert sample.image.shape[0] % 32 == 0 and sample.image.shape[1] % 32 == 0
        x = (sample.image.transpose(2, 0, 1).astype(np.float32) / 255 - mean) / std
        out = model(torch.from_numpy(x)[None])[0].float()
        prob = torch.sigmoid(out[0]).numpy()
        pred, truth = prob >= card.threshold, sample.mask == 1
        inter, union = inter + (pred & truth).sum(), union + (pred | truth).sum()
        if card.head == "instance":
            maps = np.concatenate([prob[None], out[1:4].numpy()])
            labels = label_instances(maps, card.threshold, card.nms_kernel, card.center_threshold)
            predicted = [labels == i for i in np.unique(labels) if i > 0]
            predicted = [p for p in predicted if p.sum() * card.gsd_m**2 >= DEFAULT_MIN_AREA_M2]
            true = [sample.instances == i for i in np.unique(sample.instances) if i > 0]
            matched += sum(1 for t in true for p in predicted if (t & p).sum() > 0.5 * (t | p).sum())
            truths, predictions = truths + len(true), predictions + len(predicted)
    metrics = {"iou": inter / union}
    if card.head == "instance":
        metrics["instance_f1"] = 2 * matched / (truths + predictions)
        metrics["count_error"] = (predictions - truths) / truths
    return metrics


def test_tiny_training_run_lowers_loss_and_writes_a_loadable_complete_checkpoint(tmp_path):
    config = tiny_config()
    summary = train(
        config, toy_samples(8, 0), toy_samples(2, 1), tmp_path, build_augmentation(64, config.augmentation)
    )
    history = json.loads((tmp_path / "last.json").read_text())["training"]["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert summary["encoder_tensors_loaded"] == 288 and summary["epochs"] == 3
    model, card = load_checkpoint(tmp_path / "best.safetensors")
    assert card.name == "toy" and card.architecture == "unet" and card.gsd_m == 0.3
    # the card's validation IoU is what the saved weights score (fp16 weights: a few pixels may flip)
    measured = evaluate_checkpoint(tmp_path / "best.safetensors", toy_samples(2, 1))
    assert card.metrics["validation_pixel"]["iou"] == pytest.approx(measured["iou"], abs=0.01)
    assert measured["iou"] > 0.4, measured  # bright squares on dark ground: 0.55 after these 18 steps
    assert card.training["config"]["seed"] == 0 and card.tile_size == 64
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4


def test_resume_continues_from_the_last_epoch(tmp_path):
    config = tiny_config(epochs=1, steps_per_epoch=2)
    train(config, toy_samples(4, 0), toy_samples(2, 1), tmp_path, build_augmentation(64))
    saved = torch.load(tmp_path / "last.state.pt", weights_only=True)  # plain tensors and numbers only
    assert saved["epoch"] == 1 and "state" in saved["optimizer"]
    resumed = train(
        tiny_config(epochs=2, steps_per_epoch=2),
        toy_samples(4, 0),
        toy_samples(2, 1),
        tmp_path,
        build_augmentation(64),
        resume=True,
    )
    assert resumed["epochs"] == 2 and resumed["steps"] == 4


def test_seeded_runs_are_deterministic(tmp_path):
    config = tiny_config(epochs=1, steps_per_epoch=2, encoder_weights="none")
    a = train(config, toy_samples(4, 0), toy_samples(2, 1), tmp_path / "a", build_augmentation(64))
    b = train(config, toy_samples(4, 0), toy_samples(2, 1), tmp_path / "b", build_augmentation(64))
    assert a["best_iou"] == b["best_iou"]


def test_bad_settings_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="cosine"):
        train(tiny_config(schedule="linear"), toy_samples(2, 0), toy_samples(1, 1), tmp_path, None)
    with pytest.raises(InputError, match="efficientnet_lite"):
        train(
            tiny_config(encoder="resnet18"),
            toy_samples(2, 0),
            toy_samples(1, 1),
            tmp_path,
            build_augmentation(64),
        )


#: YAML settings, each unlike its default, so that each one is seen to be applied.
YAML_SETTINGS = dict(
    epochs=2, steps_per_epoch=1, batch_size=2, crop=64, lr=0.0123, weight_decay=0.02, schedule="onecycle",
    seed=5, tile_size=128, overlap=32, encoder_weights="none", name="sample-test",
)


def onecycle_factor(progress: float) -> float:
    """README/trainer: one-cycle = cosine warm-up from 4 % over 30 % of the steps, then cosine decay to 0."""
    if progress < 0.3:
        return 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * progress / 0.3))
    return 0.5 * (1 + math.cos(math.pi * (progress - 0.3) / 0.7))


def test_train_cli_on_sample_footprints_with_yaml_config(tmp_path):
    import yaml

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({**YAML_SETTINGS, "val_fraction": 0.5}))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(SAMPLE / "images" / "zanzibar_OAM-319297-270996-19.tif"),
            str(SAMPLE / "images" / "zanzibar_OAM-319298-270996-19.tif"),
            "--footprints",
            str(SAMPLE / "labels" / "zanzibar_buildings.geojson"),
            "--config",
            str(config),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--contact-gap",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    _, card = load_checkpoint(out / "best.safetensors")
    assert (card.name, card.tile_size, card.overlap) == ("sample-test", 128, 32)
    assert card.training["config"]["contact_gap"] == 1
    recorded = card.training["config"]
    assert {key: recorded[key] for key in YAML_SETTINGS if key in recorded} == {
        k: v for k, v in YAML_SETTINGS.items() if k not in ("name", "tile_size", "overlap")
    } | {"name": "sample-test", "tile_size": 128, "overlap": 32}
    # ...and acted on: epochs x steps run, no encoder weights loaded, the optimizer's weight decay and its
    # last learning rate (one-cycle at step 2 of 2: progress 1/2) follow the YAML
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["epochs"], summary["steps"], summary["encoder_tensors_loaded"]) == (2, 2, 0)
    assert (out / "metrics.csv").read_text().count("\n") == 1 + 2
    group = torch.load(out / "last.state.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.02
    assert group["lr"] == pytest.approx(0.0123 * onecycle_factor(1 / 2), rel=1e-9)


def test_train_cli_needs_one_kind_of_labels(tmp_path):
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--footprints" in result.output


# ------------------------------------------------------------------------------------------- instances


def touching_house_samples(n: int, seed: int, with_ids: bool = True) -> list[TrainSample]:
    """Pairs of touching houses of two roof colours, with per-house ids (or without, as mask-only data)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.integers(20, 80, (96, 96, 3), dtype=np.uint8)
        ids = np.zeros((96, 96), np.int32)
        r, c = rng.integers(8, 50, 2)
        image[r : r + 25, c : c + 19] = (230, 200, 180)
        ids[r : r + 25, c : c + 19] = 1
        image[r : r + 25, c + 19 : c + 40] = (200, 120, 100)
        ids[r : r + 25, c + 19 : c + 40] = 2
        mask = (ids > 0).astype(np.uint8)
        out.append(TrainSample(image, mask, f"h{i}", group=f"g{i}", instances=ids if with_ids else None))
    return out


def test_instance_targets_follow_the_augmented_crop():
    samples = touching_house_samples(2, 0) + touching_house_samples(1, 1, with_ids=False)
    config = tiny_config(instances=True, augmentation={"rotate": 30, "affine_p": 1.0})
    config.validate()
    dataset = TrainingSet(samples, build_augmentation(64, config.augmentation), 30, True, center_sigma=4.0)
    for index in range(30):
        image, target = dataset[index]
        assert image.shape == (3, 64, 64) and target.shape == (len(TARGET_CHANNELS), 64, 64)
        semantic, center, dy, dx, center_w, offset_w = target.numpy()
        if index % 3 == 2:  # no ids: semantic channel only
            assert center_w.max() == 0 and offset_w.max() == 0
            continue
        building = semantic == 1
        assert np.array_equal(offset_w > 0, building)
        assert (center_w[semantic == 255] == 0).all() and (center_w[semantic != 255] == 1).all()
        rows, cols = np.nonzero(building)
        vy = (rows + dy[rows, cols]).round().astype(int)
        vx = (cols + dx[rows, cols]).round().astype(int)
        assert building[vy, vx].all()  # every building pixel points at a pixel of a building
        assert np.allclose(center[vy, vx], 1.0)  # ...that is a centre (heatmap peak)


def test_contact_gap_opens_background_between_touching_houses_in_semantic_targets():
    samples = touching_house_samples(2, 0) + touching_house_samples(1, 1, with_ids=False)
    dataset = TrainingSet(samples, build_augmentation(64, {"affine_p": 0}), 6, True, contact_gap=1)
    for before, after in zip(samples, dataset.samples, strict=True):
        if before.instances is None:
            assert after is before
            continue
        assert ndimage.label(before.mask == 1)[1] == 1  # the two houses touch
        assert ndimage.label(after.mask == 1, np.ones((3, 3)))[1] == 2
        assert (after.mask <= before.mask).all() and before.mask.sum() - after.mask.sum() == 2 * 25
    with pytest.raises(InputError, match="semantic models"):
        tiny_config(instances=True, contact_gap=1).validate()


def test_instance_training_writes_an_instance_card_selected_on_instance_f1(tmp_path):
    config = tiny_config(instances=True, epochs=2)
    summary = train(
        config,
        touching_house_samples(8, 0),
        touching_house_samples(3, 1),
        tmp_path,
        build_augmentation(64, config.augmentation),
    )
    assert summary["selected_on"] == "instance_f1"
    model, card = load_checkpoint(tmp_path / "best.safetensors")
    assert card.head == "instance" and card.architecture == "panoptic_unet"
    assert isinstance(model, PanopticBuildingNet)
    metrics = card.metrics["validation_pixel"]
    measured = evaluate_checkpoint(tmp_path / "best.safetensors", touching_house_samples(3, 1))
    for key in ("iou", "instance_f1", "count_error"):
        assert metrics[key] == pytest.approx(measured[key], abs=0.01), (key, metrics, measured)
    with pytest.raises(InputError, match="one building class"):
        TrainConfig(instances=True, classes=["a", "b"]).validate()


def oracle_house_pairs(n: int, same_shade: bool) -> list[TrainSample]:
    """Pairs of touching houses (25 x 19 and 25 x 21 px) that :class:`RoofInstanceNet` segments exactly; with
    ``same_shade`` both roofs have one colour, so it sees (and predicts) one merged building."""
    out = []
    for i in range(n):
        r, c = 10 + 20 * i, 8 + 15 * i
        shades = [ROOF_SHADES[0], ROOF_SHADES[0 if same_shade else 1]]
        rgb = scene(96, 96, [(r, c, r + 25, c + 19), (r, c + 19, r + 25, c + 40)], shades)
        ids = np.zeros((96, 96), np.int32)
        ids[r : r + 25, c : c + 19], ids[r : r + 25, c + 19 : c + 40] = 1, 2
        image, mask = rgb.transpose(1, 2, 0).copy(), (ids > 0).astype(np.uint8)
        out.append(TrainSample(image, mask, f"p{i}", group=f"g{i}", instances=ids))
    return out


def test_validation_instance_f1_of_models_with_known_output():
    """Instance F1 and count error against values worked out by hand, for a perfect and a merging model."""
    config = tiny_config(instances=True)
    config.validate()
    model = RoofInstanceNet()
    perfect = validate(model, oracle_house_pairs(3, same_shade=False), config, torch.device("cpu"))
    assert perfect["instance_f1"] == 1.0 and perfect["count_error"] == 0.0 and perfect["iou"] == 1.0
    # one 25 x 40 blob per pair: IoU 21/40 = 0.525 with the wider house (a match), 19/40 with the other;
    # per pair 1 match, 2 true, 1 predicted -> F1 = 2 * 1 / (2 + 1), count error (1 - 2) / 2
    merged = validate(model, oracle_house_pairs(3, same_shade=True), config, torch.device("cpu"))
    assert merged["instance_f1"] == pytest.approx(2 / 3) and merged["count_error"] == -0.5
    assert merged["iou"] == 1.0


def test_init_weights_start_an_instance_model_from_the_semantic_default():
    from bldgseg.models import resolve_checkpoint

    default = resolve_checkpoint("aerial-buildings")
    config = TrainConfig(instances=True, init_weights=str(default))
    config.validate()  # instances: the architecture becomes panoptic_unet
    model, loaded = init_model(config)
    semantic, _ = load_checkpoint(default)
    own = model.state_dict()
    shared = {k for k in semantic.state_dict() if k in own}
    assert loaded == len(shared) > 300
    key = "segmentation_head.0.weight"
    assert torch.equal(own[key], semantic.state_dict()[key].float())
    with pytest.raises(InputError, match="not found"):
        init_model(TrainConfig(init_weights="missing.safetensors"))


def test_train_cli_instances_on_sample_footprints(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(SAMPLE / "images" / "zanzibar_OAM-319297-270996-19.tif"),
            str(SAMPLE / "images" / "zanzibar_OAM-319298-270996-19.tif"),
            "--footprints",
            str(SAMPLE / "labels" / "zanzibar_buildings.geojson"),
            "--instances",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--batch-size",
            "2",
            "--crop",
            "64",
            "--val-fraction",
            "0.5",
            "--encoder-weights",
            "none",
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "instance F1" in result.output
    _, card = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert card.head == "instance" and card.architecture == "panoptic_unet"
