import numpy as np
import pytest
import torch

from bldgseg.blending import blend_weight
from bldgseg.devices import resolve_device
from bldgseg.errors import DeviceError, InputError
from bldgseg.inference import Predictor
from bldgseg.models import load_checkpoint
from tests.conftest import scene


def test_blend_weight_is_smooth_symmetric_and_positive():
    w = blend_weight(64)
    assert w.min() > 0 and np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert w[32, 32] == pytest.approx(w.max())


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(DeviceError, match="--device cpu"):
            resolve_device("cuda")
    with pytest.raises(DeviceError):
        resolve_device("tpu")


def test_overlapping_windows_reproduce_the_exact_mask(red_roof_model):
    model, card = load_checkpoint(red_roof_model)
    predictor = Predictor(model, card, "cpu", batch_size=3)
    rgb = scene(150, 170, [(10, 20, 60, 90), (100, 140, 150, 170)])
    valid = np.ones((150, 170), bool)
    prob = predictor.predict(rgb, valid)
    assert prob.shape == (150, 170)
    expected = rgb[0] == 220
    assert np.array_equal(prob >= 0.5, expected)


def test_invalid_pixels_get_zero_probability(red_roof_model):
    model, card = load_checkpoint(red_roof_model)
    rgb = scene(64, 64, [(0, 0, 64, 64)])
    valid = np.ones((64, 64), bool)
    valid[:, :32] = False
    prob = Predictor(model, card, "cpu").predict(rgb, valid)
    assert prob[:, :32].max() == 0 and prob[:, 32:].min() > 0.5


def test_small_image_is_padded(red_roof_model):
    model, card = load_checkpoint(red_roof_model)
    rgb = scene(20, 30, [(5, 5, 10, 10)])
    prob = Predictor(model, card, "cpu", tta=True).predict(rgb, np.ones((20, 30), bool))
    assert prob.shape == (20, 30) and (prob >= 0.5).sum() == 25


def test_image_smaller_than_a_window_is_one_window_of_its_own_size(red_roof_model):
    model, card = load_checkpoint(red_roof_model)
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(tuple(args[0].shape)))
    predictor = Predictor(model, card, "cpu", tile_size=512)
    rgb = scene(200, 250, [(50, 60, 90, 120)])
    prob = predictor.predict(rgb, np.ones((200, 250), bool))
    assert seen == [(1, 3, 256, 256)]  # 250 rounded up to 32s, not padded to 512
    assert np.array_equal(prob >= 0.5, rgb[0] == 220)
    seen.clear()
    predictor.predict(scene(200, 600, []), np.ones((200, 600), bool))
    assert {s[2:] for s in seen} == {(512, 512)}  # wider than a window: full windows as before


def test_tile_size_must_suit_the_network(red_roof_model):
    model, card = load_checkpoint(red_roof_model)
    with pytest.raises(InputError, match="multiple of 32"):
        Predictor(model, card, "cpu", tile_size=100)


def test_device_blending_gives_the_host_blendings_maps():
    """The CUDA path's blending (``DeviceBlend``, torch tensors) checked here on the CPU against the NumPy one:
    blended channels and channels taken from the deepest window, windows overlapping in every direction."""
    from rasterio.windows import Window

    from bldgseg.blending import DeviceBlend, HostBlend

    rng = np.random.default_rng(0)
    tile, shape, soft = 32, (4, 90, 90), 2
    weight = blend_weight(tile)
    windows = [Window(c, r, tile, tile) for r in (0, 20, 48) for c in (0, 24, 50, 58)]
    maps = torch.from_numpy(rng.random((len(windows), shape[0], tile, tile), dtype=np.float32))
    host, device = HostBlend(shape, soft, weight), DeviceBlend(shape, soft, weight, torch.device("cpu"))
    for start in range(0, len(windows), 5):
        host.add(windows[start : start + 5], maps[start : start + 5])
        device.add(windows[start : start + 5], maps[start : start + 5])
    expected, got = host.result(), device.result()
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got[:soft], expected[:soft], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[soft:], expected[soft:])
    assert (expected[:, 80:, :] == 0).all() and (got[:, 80:, :] == 0).all()  # rows no window reached: 0


def test_batches_made_ahead_give_the_maps_of_batches_made_in_turn(red_roof_model, monkeypatch):
    model, card = load_checkpoint(red_roof_model)
    predictor = Predictor(model, card, "cpu", batch_size=2)
    rgb = scene(150, 170, [(10, 20, 60, 90), (100, 140, 150, 170)])
    valid = np.ones((150, 170), bool)
    ahead = predictor.predict(rgb, valid)
    monkeypatch.setattr("bldgseg.inference.PREFETCH_BATCHES", 0)
    np.testing.assert_array_equal(ahead, predictor.predict(rgb, valid))
