"""Training: offline encoder weights, a tiny real training run, resume, and the train CLI."""

import json

import numpy as np
import pytest
import timm
import torch
from typer.testing import CliRunner

from bldgseg.cli import app
from bldgseg.errors import InputError
from bldgseg.models import load_checkpoint
from bldgseg.models.pretrained import lite_checkpoint_path, map_lite_state_dict
from bldgseg.train.augment import build_augmentation
from bldgseg.train.datasets import TrainSample
from bldgseg.train.trainer import TrainConfig, train
from tests.conftest import SAMPLE


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
    assert card.metrics["validation_pixel"]["iou"] == pytest.approx(summary["best_iou"])
    assert card.training["config"]["seed"] == 0 and card.tile_size == 64
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4


def test_resume_continues_from_the_last_epoch(tmp_path):
    config = tiny_config(epochs=1, steps_per_epoch=2)
    train(config, toy_samples(4, 0), toy_samples(2, 1), tmp_path, build_augmentation(64))
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


def test_train_cli_on_sample_footprints_with_yaml_config(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        "epochs: 1\nsteps_per_epoch: 1\nbatch_size: 2\ncrop: 64\nval_fraction: 0.5\n"
        "encoder_weights: none\nname: sample-test\n"
    )
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
            str(tmp_path / "run"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    _, card = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert card.name == "sample-test"


def test_train_cli_needs_one_kind_of_labels(tmp_path):
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--footprints" in result.output
