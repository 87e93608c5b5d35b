"""Each engine and precision available here gives the fp32 masks, within a stated tolerance, on a real tile."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from bldgseg import precision as precision_module
from bldgseg.engines import build_runner, file_digest, weights_digest
from bldgseg.errors import DeviceError
from bldgseg.inference import Predictor
from bldgseg.models import int8_ir_of, load_card, load_checkpoint
from bldgseg.precision import choose_inference, openvino_available
from tests.conftest import SAMPLE, RedRoofNet, RoofInstanceNet

TILE = SAMPLE / "images" / "zanzibar_OAM-319298-270996-19.tif"
#: Smallest pixel IoU of the thresholded mask with torch fp32's, and the largest probability difference.
#: int8 (a quantized model, not a rounding of fp32) is held to accuracy against the footprints in the card, and
#: here to its masks staying close to fp32's (0.984 and 0.22 measured on this tile; 0.958 and 0.27 with the
#: previous default's weights).
TOLERANCE = {"fp32": (0.9999, 1e-3), "bf16": (0.98, 0.2), "int8": (0.93, 0.4)}
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")


def mask_iou(prob: np.ndarray, reference: np.ndarray, threshold: float = 0.5) -> float:
    a, b = prob >= threshold, reference >= threshold
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def sample_tile() -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(TILE) as ds:
        rgb = ds.read([1, 2, 3])
    return rgb, np.ones(rgb.shape[1:], bool)


@pytest.fixture(scope="module")
def reference(sample_tile) -> np.ndarray:
    model, card = load_checkpoint("aerial-buildings")
    return Predictor(model, card, "cpu", batch_size=2, precision="fp32", engine="torch").predict(*sample_tile)


@pytest.mark.parametrize(
    ("engine", "precision"),
    [
        ("torch", "fp32"),
        ("torch", "bf16"),
        pytest.param("openvino", "fp32", marks=needs_openvino),
        pytest.param("openvino", "bf16", marks=needs_openvino),
    ],
)
def test_engine_and_precision_give_the_fp32_masks(sample_tile, reference, engine, precision, monkeypatch):
    monkeypatch.setattr(precision_module, "openvino_available", openvino_available)  # the real probe
    model, card = load_checkpoint("aerial-buildings")
    predictor = Predictor(model, card, "cpu", batch_size=2, precision=precision, engine=engine)
    assert predictor.inference.engine == engine
    prob = predictor.predict(*sample_tile)
    # OpenVINO bf16 on a CPU without bf16 runs fp32 and says so; the tolerance is that of what it ran
    least_iou, largest = TOLERANCE[predictor.inference.precision]
    assert mask_iou(prob, reference) >= least_iou
    assert np.abs(prob - reference).max() <= largest
    assert (reference >= card.threshold).mean() > 0.05  # the tile has buildings to compare


def test_bf16_without_native_support_still_runs_emulated(sample_tile, reference):
    """The suite's generic CPU has no bf16 flags: bf16 is then emulated by torch, correct and slower."""
    model, card = load_checkpoint("aerial-buildings")
    predictor = Predictor(model, card, "cpu", batch_size=2, precision="bf16", engine="auto")
    assert predictor.inference.engine == "torch" and "emulated" in predictor.inference.reason
    assert mask_iou(predictor.predict(*sample_tile), reference) >= TOLERANCE["bf16"][0]


def test_plain_predictor_keeps_fp32_on_the_cpu(red_roof_model):
    model, card = load_checkpoint(red_roof_model)
    inference = Predictor(model, card, "cpu").inference
    assert (inference.precision, inference.engine) == ("fp32", "torch")


def test_fp16_on_the_cpu_is_refused(red_roof_model):
    model, card = load_checkpoint(red_roof_model)
    with pytest.raises(DeviceError, match="use --precision bf16 or fp32"):
        Predictor(model, card, "cpu", precision="fp16")


def test_weights_digest_follows_the_weights():
    a, b = RedRoofNet(), RedRoofNet()
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.head.bias += 1
    assert weights_digest(a) != weights_digest(b)


@needs_openvino
def test_openvino_conversion_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BLDGSEG_CACHE_DIR", str(tmp_path))
    model = RedRoofNet().eval()
    choice = choose_inference("fp32", "openvino", "cpu", openvino=True)
    run, used, torch_device = build_runner(model, torch.device("cpu"), choice, 64)
    assert used.engine == "openvino" and torch_device is None  # NumPy batches in and out
    (xml,) = tmp_path.glob("openvino/*/model.xml")
    x = torch.randn(3, 3, 40, 72)
    got = run(x.numpy())
    assert isinstance(got, np.ndarray) and np.allclose(got, model(x).detach().numpy(), atol=1e-4)
    stamp = xml.stat().st_mtime_ns
    build_runner(model, torch.device("cpu"), choice, 64)
    assert xml.stat().st_mtime_ns == stamp  # compiled from the cache, not converted again


@needs_openvino
def test_a_model_openvino_cannot_reproduce_falls_back_to_torch(tmp_path, monkeypatch):
    """RoofInstanceNet computes its instance maps in NumPy: tracing would bake them in as constants."""
    monkeypatch.setenv("BLDGSEG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision_module, "openvino_available", lambda: True)
    model = RoofInstanceNet().eval()
    auto = choose_inference("fp32", "auto", "cpu", openvino=True)
    _, used, torch_device = build_runner(model, torch.device("cpu"), auto, 96)
    assert used.engine == "torch" and "could not convert" in used.reason and torch_device.type == "cpu"
    asked = choose_inference("fp32", "openvino", "cpu", openvino=True)
    with pytest.raises(DeviceError, match="--engine torch"):
        build_runner(model, torch.device("cpu"), asked, 96)


@needs_openvino
def test_a_checkpoint_whose_ir_is_cached_never_builds_its_torch_model(tmp_path, monkeypatch):
    """The second run of a checkpoint file compiles its cached IR: no smp/timm import, no model construction."""
    monkeypatch.setenv("BLDGSEG_CACHE_DIR", str(tmp_path))
    model = RedRoofNet().eval()
    choice = choose_inference("fp32", "openvino", "cpu", openvino=True)
    builds = []

    def build() -> torch.nn.Module:
        builds.append(1)
        return model

    x = torch.randn(2, 3, 64, 64)
    expected = model(x).detach().numpy()
    build_runner(build, torch.device("cpu"), choice, 64, weights_file="0123abcd")
    second, used, _ = build_runner(build, torch.device("cpu"), choice, 64, weights_file="0123abcd")
    assert builds == [1] and used.engine == "openvino"
    assert np.allclose(second(x.numpy()), expected, atol=1e-4)
    build_runner(build, torch.device("cpu"), choice, 64, weights_file="another-file")
    assert builds == [1, 1]  # another checkpoint file is looked up (and found by its weights) after building
    for xml in tmp_path.glob("openvino/*/model.xml"):
        xml.unlink()  # a removed IR is converted again, never half-found
    third, _, _ = build_runner(build, "cpu", choice, 64, weights_file="0123abcd")
    assert builds == [1, 1, 1] and np.allclose(third(x.numpy()), expected, atol=1e-4)


def test_torch_engine_builds_a_lazy_model_once(red_roof_model, sample_tile):
    model, card = load_checkpoint(red_roof_model)
    builds = []

    def build() -> torch.nn.Module:
        builds.append(1)
        return model

    predictor = Predictor(build, card, "cpu", precision="fp32", engine="torch", weights_file="x")
    predictor.predict(*sample_tile)
    predictor.predict(*sample_tile)
    assert builds == [1]


@needs_openvino
def test_int8_runs_the_shipped_ir_made_from_these_weights(sample_tile, reference, monkeypatch):
    monkeypatch.setattr(precision_module, "openvino_available", openvino_available)
    weights, card = load_card("aerial-buildings")
    ir = int8_ir_of(weights, card, file_digest(weights))
    assert ir is not None and ir.with_suffix(".bin").exists()
    assert card.int8["rows"][2]["precision"] == "int8"  # the card holds its measured accuracy
    model, _ = load_checkpoint("aerial-buildings")
    predictor = Predictor(model, card, "cpu", batch_size=2, precision="int8", engine="auto", int8_ir=ir)
    assert (predictor.inference.engine, predictor.inference.precision) == ("openvino", "int8")
    prob = predictor.predict(*sample_tile)
    least_iou, largest = TOLERANCE["int8"]
    assert mask_iou(prob, reference) >= least_iou
    assert np.abs(prob - reference).max() <= largest


def test_an_int8_ir_of_other_weights_is_not_used(tmp_path):
    weights, card = load_card("aerial-buildings")
    assert int8_ir_of(weights, card, "0000000000000000") is None  # the card names other weights
    copy = tmp_path / "mine.safetensors"
    copy.write_bytes(weights.read_bytes())
    assert int8_ir_of(copy, card, file_digest(copy)) is None  # no mine.int8.xml beside it


@needs_openvino
def test_int8_without_an_ir_says_how_to_make_one(red_roof_model, monkeypatch):
    monkeypatch.setattr(precision_module, "openvino_available", lambda: True)
    model, card = load_checkpoint(red_roof_model)
    with pytest.raises(DeviceError, match="scripts/quantize_int8.py"):
        Predictor(model, card, "cpu", precision="int8", engine="auto")


#: Runs a bldgseg job with every torch import refused; prints the number of buildings.
_TORCH_BLOCKED_RUN = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch was imported")
sys.meta_path.insert(0, Refuse())
from pathlib import Path
from bldgseg.pipeline import RunConfig, run
result = run(RunConfig(inputs=[Path(sys.argv[1])], output=Path(sys.argv[2]), model=sys.argv[3], device="cpu",
                       engine="openvino", precision="fp32"))
assert result.metadata["units_failed"] == 0, result.metadata
print(len(result.buildings))
"""


@needs_openvino
def test_a_cpu_run_on_a_cached_openvino_ir_never_imports_torch(tmp_path, red_roof_model, monkeypatch):
    """Once a checkpoint's IR is cached, a CPU run on OpenVINO does without torch (about 1 s of imports)."""
    import subprocess
    import sys

    from bldgseg.pipeline import RunConfig, run
    from tests.conftest import scene, write_rgb

    monkeypatch.setenv("BLDGSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_module, "openvino_available", openvino_available)  # the real probe
    boxes = [(r, c, r + 20, c + 30) for r in range(10, 200, 60) for c in range(10, 200, 60)]
    image = write_rgb(tmp_path / "roofs.tif", scene(200, 200, boxes))
    first = run(
        RunConfig(
            inputs=[image], output=tmp_path / "a.gpkg", model=str(red_roof_model), device="cpu",
            engine="openvino", precision="fp32",
        )
    )  # fmt: skip
    assert first.metadata["engine"] == "openvino" and len(first.buildings) == len(boxes)
    args = [str(image), str(tmp_path / "b.gpkg"), str(red_roof_model)]
    done = subprocess.run(
        [sys.executable, "-c", _TORCH_BLOCKED_RUN, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == len(first.buildings)
