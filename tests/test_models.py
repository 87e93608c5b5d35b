import json

import pytest
import torch

from bldgseg.errors import ModelError
from bldgseg.models import (
    ModelCard,
    build_model,
    bundled_models,
    list_architectures,
    load_checkpoint,
    save_checkpoint,
)
from bldgseg.models.pretrained import load_imagenet_encoder


def test_registry_has_the_documented_architectures():
    assert {"unet", "pspnet", "deeplabv3", "deeplabv3plus"} <= set(list_architectures())


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ModelError, match="deeplabv3plus"):
        build_model("segformer-xl")


@pytest.mark.parametrize("arch", ["unet", "pspnet", "deeplabv3", "deeplabv3plus"])
def test_each_architecture_runs_forward(arch):
    model = build_model(arch).eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 1, 64, 64)


def test_offline_imagenet_weights_fill_the_whole_encoder():
    model = build_model("unet", "tu-efficientnet_lite0")
    before = model.encoder.model.conv_stem.weight.clone()
    assert load_imagenet_encoder(model) == len(model.encoder.model.state_dict())
    assert not torch.equal(before, model.encoder.model.conv_stem.weight)


def test_checkpoint_round_trip_is_fp16_on_disk_and_loads(tmp_path):
    model = build_model("unet")
    card = ModelCard(name="t", architecture="unet", encoder="tu-efficientnet_lite0", gsd_m=0.5)
    weights = save_checkpoint(model, card, tmp_path / "t.safetensors")
    from safetensors.torch import load_file

    assert all(v.dtype == torch.float16 for v in load_file(str(weights)).values() if v.is_floating_point())
    loaded, loaded_card = load_checkpoint(weights)
    assert loaded_card.gsd_m == 0.5 and json.loads(weights.with_suffix(".json").read_text())["name"] == "t"
    ref = model.state_dict()["segmentation_head.0.weight"].half().float()
    assert torch.equal(loaded.state_dict()["segmentation_head.0.weight"], ref)


def test_missing_model_names_the_bundled_ones(tmp_path):
    with pytest.raises(ModelError, match="aerial-buildings"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_bundled_default_model_loads_with_a_complete_card():
    assert "aerial-buildings" in bundled_models()
    model, card = load_checkpoint("aerial-buildings")
    assert card.gsd_m == pytest.approx(0.3) and card.training_data and card.license
    assert card.metrics["leave_one_city_out"]["cities"]["Kampala"]["clean_test"]  # the unseen-city numbers
    assert "test_kampala_unseen_city" in card.metrics and "postprocess_ablation" in card.metrics
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
