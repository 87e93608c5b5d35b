"""CUDA: inference on the GPU equals the CPU's within AMP's tolerance, AMP is really used (inference and
training), and GPU work units go to workers that declare a GPU.

Marked ``gpu``: left out by the default ``pytest`` run; ``pytest -m gpu`` runs them where CUDA is present and
skips them, saying why, where it is not (``tests/conftest.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
import torch

from bldgseg.inference import Predictor
from bldgseg.models import load_checkpoint
from bldgseg.pipeline import RunConfig, run
from tests.conftest import ROOF_SHADES, SAMPLE, scene, write_rgb

pytestmark = pytest.mark.gpu

TILE = SAMPLE / "images" / "kampala_OAM-309606-261636-19.tif"
#: fp16 autocast against fp32: largest probability difference, and share of pixels on the other side of 0.5.
MAX_PROBABILITY_DIFFERENCE = 0.05
MAX_FLIPPED_PIXELS = 0.005


def sample_rgb() -> np.ndarray:
    with rasterio.open(TILE) as ds:
        return ds.read([1, 2, 3])


def test_cuda_probabilities_equal_the_cpus_within_amp_tolerance():
    model, card = load_checkpoint("aerial-buildings")
    rgb = sample_rgb()
    valid = np.ones(rgb.shape[1:], bool)
    cpu = Predictor(model, card, "cpu").predict(rgb, valid)
    model, card = load_checkpoint("aerial-buildings")
    gpu = Predictor(model, card, "cuda", batch_size=16).predict(rgb, valid)
    assert gpu.shape == cpu.shape and gpu.dtype == np.float32
    assert np.abs(gpu - cpu).max() < MAX_PROBABILITY_DIFFERENCE
    assert ((gpu >= 0.5) != (cpu >= 0.5)).mean() < MAX_FLIPPED_PIXELS
    assert (cpu >= 0.5).mean() > 0.05  # the tile has buildings: the comparison is not of two empty maps


def test_cuda_blending_on_the_device_gives_the_cpus_maps(roof_instance_model):
    """Normalisation and blending on the device, batches from pinned memory sent asynchronously: in fp32, the
    maps equal the CPU's within TF32 rounding, blended over many overlapping windows (bundled model) and taken
    from the deepest window (instance model)."""
    model, card = load_checkpoint("aerial-buildings")
    rgb = sample_rgb()
    valid = np.ones(rgb.shape[1:], bool)
    kw = dict(batch_size=5, tile_size=128, overlap=48, precision="fp32")
    cpu = Predictor(model, card, "cpu", **kw).predict(rgb, valid)
    model, card = load_checkpoint("aerial-buildings")
    gpu = Predictor(model, card, "cuda", **kw).predict(rgb, valid)
    assert gpu.dtype == np.float32 and np.abs(gpu - cpu).max() < 0.01
    assert ((gpu >= 0.5) != (cpu >= 0.5)).mean() < 0.001 and (cpu >= 0.5).mean() > 0.05
    roofs = scene(200, 230, [(10, 10, 60, 90), (10, 90, 60, 150), (120, 100, 190, 200)], ROOF_SHADES[:3])
    model, card = load_checkpoint(roof_instance_model)
    cpu = Predictor(model, card, "cpu", batch_size=3).predict_instances(roofs, np.ones((200, 230), bool))
    gpu = Predictor(model, card, "cuda", batch_size=3).predict_instances(roofs, np.ones((200, 230), bool))
    assert gpu.shape == cpu.shape == (4, 200, 230)
    assert (np.abs(gpu - cpu) > 1e-3).mean() < 0.001


def test_cuda_inference_runs_the_model_in_half_precision():
    model, card = load_checkpoint("aerial-buildings")
    dtypes = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    rgb = sample_rgb()
    Predictor(model, card, "cuda").predict(rgb, np.ones(rgb.shape[1:], bool))
    assert dtypes and set(dtypes) == {torch.float16}


def test_bldgseg_run_on_cuda_gives_the_cpus_buildings(tmp_path):
    common = dict(inputs=[TILE], texture=False)
    cpu = run(RunConfig(output=tmp_path / "cpu.gpkg", device="cpu", **common))
    gpu = run(RunConfig(output=tmp_path / "gpu.gpkg", device="cuda", **common))
    assert gpu.metadata["device"].startswith("cuda")
    assert abs(len(gpu.buildings) - len(cpu.buildings)) <= 1 and len(cpu.buildings) > 10
    union_cpu = shapely.union_all(list(cpu.buildings.geometry))
    union_gpu = shapely.union_all(list(gpu.buildings.geometry))
    assert union_cpu.symmetric_difference(union_gpu).area < 0.01 * union_cpu.area


def test_training_on_cuda_uses_amp(tmp_path, monkeypatch):
    from bldgseg.train import trainer
    from bldgseg.train.augment import build_augmentation
    from tests.test_train import tiny_config, toy_samples

    autocast = []
    real_loss = trainer.training_loss

    def recording_loss(*args, **kwargs):
        autocast.append(torch.is_autocast_enabled("cuda"))
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "training_loss", recording_loss)
    config = tiny_config(device="cuda", epochs=2, steps_per_epoch=4)
    summary = trainer.train(config, toy_samples(8, 0), toy_samples(2, 1), tmp_path, build_augmentation(64))
    assert autocast and all(autocast)
    history = [row["loss"] for row in summary_history(tmp_path)]
    assert all(np.isfinite(history)) and summary["steps"] == 8
    _, card = load_checkpoint(tmp_path / "best.safetensors")
    assert card.training["config"]["amp"] is True and card.training["config"]["device"] == "cuda"


def summary_history(folder) -> list[dict]:
    import json

    return json.loads((folder / "last.json").read_text())["training"]["history"]


@pytest.mark.distributed
def test_cuda_units_go_to_local_workers_that_declare_a_gpu(tmp_path, red_roof_model):
    from bldgseg.executors import make_executor
    from tests.conftest import REPO

    preload = str(REPO / "tests" / "dask_preload.py")
    executor = make_executor(workers=1, device="cuda", preload=(preload,))
    try:
        assert executor.task_resources("cuda") == {"GPU": 1}
        info = executor.client.scheduler_info(n_workers=-1)["workers"]
        assert [w["resources"] for w in info.values()] == [{"GPU": 1}]
    finally:
        executor.close()
    image = write_rgb(tmp_path / "a.tif", scene(256, 256, [(10, 10, 40, 60), (150, 150, 200, 220)]))
    result = run(
        RunConfig(
            inputs=[image], output=tmp_path / "o.gpkg", model=str(red_roof_model), device="cuda", workers=1,
            preload=(preload,), chunk_size=128, max_building_size_m=20.0, simplify_m=0.0, texture=False,
        )
    )  # fmt: skip
    assert result.metadata["device"].startswith("cuda") and result.metadata["units_failed"] == 0
    assert sorted(result.buildings.area_m2.round(2)) == [round(30 * 50 * 0.09, 2), round(50 * 70 * 0.09, 2)]
