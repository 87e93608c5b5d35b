"""HRNet-OCR: backbone levels, OCR module, forward shapes, auxiliary loss, training steps, checkpoints."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from bldgseg.errors import ModelError
from bldgseg.models import ModelCard, build_model, load_checkpoint, save_checkpoint
from bldgseg.models.hrnet_ocr import AUX_WEIGHT, HRNetOCR, ObjectAttention, SpatialGather, ocr_loss
from bldgseg.models.panoptic import PanopticBuildingNet, register_instance_architectures
from bldgseg.train.losses import make_loss, training_loss
from bldgseg.train.trainer import TrainConfig

register_instance_architectures()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is fastest, and avoids OpenMP spin-waiting on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _toy(n: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g) * 0.3
    target = torch.zeros(n, 1, size, size)
    target[:, :, 10:30, 8:40] = 1
    target[:, :, 40:56, 20:60] = 1
    target[:, :, :, :2] = 255  # ignored strip
    images[:, 0] += 1.5 * (target[:, 0] == 1)
    return images, target


def test_backbone_returns_the_four_hrnet_branches():
    model = HRNetOCR("hrnet_w18_small")
    info = model.encoder.feature_info
    assert info.reduction() == [4, 8, 16, 32] and info.channels() == [16, 32, 64, 128]
    feats = model.encoder(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert model.head.aux_head[0][0].in_channels == 16 + 32 + 64 + 128


def test_registry_builds_hrnet_ocr_and_forward_shapes():
    model = build_model("hrnet_ocr", "tu-hrnet_w18_small").eval()
    assert isinstance(model, HRNetOCR)
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
        assert model(torch.zeros(1, 3, 48, 40)).shape == (1, 1, 48, 40)  # padded to 64 and cropped back
        main, aux = model.forward_with_aux(torch.zeros(2, 3, 64, 64))
    assert main.shape == aux.shape == (2, 1, 64, 64)
    assert torch.equal(main, model(torch.zeros(2, 3, 64, 64)))
    multi = HRNetOCR("hrnet_w18_small", classes=3).eval()
    with torch.inference_mode():
        assert multi(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(ModelError, match="HRNet encoder"):
        build_model("hrnet_ocr", "tu-efficientnet_lite0")


def test_ocr_gather_and_attention():
    feats = torch.randn(2, 8, 4, 5)
    regions = torch.full((2, 2, 4, 5), -50.0)
    regions[:, 0, 1, 2] = 50.0  # region 0 sits on one pixel
    objects = SpatialGather()(feats, regions)
    assert objects.shape == (2, 2, 8)
    assert torch.allclose(objects[:, 0], feats[:, :, 1, 2], atol=1e-5)
    assert torch.allclose(objects[:, 1], feats.flatten(2).mean(2), atol=1e-5)  # flat logits: plain average
    attention = ObjectAttention(8, 4).eval()
    assert attention(feats, objects).shape == feats.shape


def test_ocr_loss_adds_the_weighted_aux_loss():
    base = make_loss(TrainConfig())
    main = torch.randn(2, 1, 16, 16)
    aux = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    expected = base(main, target) + AUX_WEIGHT * base(aux, target)
    assert torch.allclose(ocr_loss(main, aux, target, base), expected)
    small = ocr_loss(main[..., ::2, ::2], aux[..., ::2, ::2], target, base)  # logits resized to the target
    assert torch.isfinite(small)


def test_hrnet_ocr_trains_on_cpu_with_the_aux_loss():
    torch.manual_seed(0)
    model = build_model("hrnet_ocr", "hrnet_w18_small").train()
    images, target = _toy()
    base = make_loss(TrainConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stem = model.encoder.conv1.weight
    before = stem.detach().clone()
    losses = []
    for _ in range(3):
        loss = training_loss(model, images, target, base)
        optimizer.zero_grad()
        loss.backward()
        assert stem.grad.abs().sum() > 0
        assert model.head.aux_head[-1].weight.grad.abs().sum() > 0
        assert model.head.attention.key[0].weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and min(losses[1:]) < losses[0]
    assert not torch.equal(before, stem.detach())


def test_checkpoints_and_local_encoder_weights(tmp_path):
    model = build_model("hrnet_ocr", "hrnet_w18_small")
    card = ModelCard(name="ocr", architecture="hrnet_ocr", encoder="hrnet_w18_small")
    weights = save_checkpoint(model, card, tmp_path / "ocr.safetensors")
    loaded, _ = load_checkpoint(weights)
    key = "head.classifier.weight"
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key].half().float())

    # an HRNet-OCR checkpoint initialises the instance model on the same backbone (all but its two heads)
    instance = build_model("panoptic_hrnet_ocr", "hrnet_w18_small")
    assert isinstance(instance, PanopticBuildingNet)
    result = instance.load_state_dict(loaded.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert {k.split(".")[0] for k in result.missing_keys} == {"center_head", "offset_head"}
    instance.eval()
    with torch.inference_mode():
        out, aux = instance.forward_with_aux(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 4, 64, 64) and aux.shape == (1, 1, 64, 64)

    # encoder weights come from a local timm state dict only (nothing is downloaded)
    reference = timm.create_model("hrnet_w18_small", pretrained=False)
    torch.save(reference.state_dict(), tmp_path / "hrnet.pth")
    fresh = HRNetOCR("hrnet_w18_small", encoder_weights=tmp_path / "hrnet.pth")
    assert torch.equal(fresh.encoder.conv1.weight, reference.conv1.weight)
    with pytest.raises(ValueError, match="local file"):
        HRNetOCR("hrnet_w18_small", encoder_weights="imagenet")
