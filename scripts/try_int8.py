"""Experiment: OpenVINO int8 (NNCF post-training quantization) of a model, against fp32 and bf16.

Not a `--precision` choice yet (docs/accuracy.md says why): this measures what int8 would give. The IR is the one
`bldgseg.engines` caches; calibration uses training crops (the Zanzibar z19 tiles that are not validation tiles,
and Accra chips); accuracy is pixel IoU on the 5 validation tiles against the OSM masks and against fp32; speed is
the model alone on 512-px batches. Needs NNCF (benchmark-only): `pip install --target ../nncf-site --no-deps
nncf==3.4.0 tabulate`, then `PYTHONPATH=../nncf-site .venv/bin/python scripts/try_int8.py`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from tune_instances import validation_tiles  # scripts/ is on sys.path when run as a script

from bldgseg.engines import openvino_ir_path
from bldgseg.inference import Predictor
from bldgseg.models import load_checkpoint


def calibration_crops(data: Path, card, limit: int) -> list[np.ndarray]:
    """Normalised 1 x 3 x 256 x 256 float32 training crops: Zanzibar z19 training tiles, then Accra chips of
    the training rows (< 19), as `scripts/train_aerial.py` splits them."""
    validation, _ = validation_tiles(data / "aerial")
    held_out = {p.name for p in validation}
    zanzibar = sorted((data / "aerial" / "oam_zanzibar_tz" / "images" / "z19").glob("*.tif"))
    images = []
    for path in (p for p in zanzibar if p.name not in held_out):
        with rasterio.open(path) as ds:
            images.append(ds.read([1, 2, 3]))
    for path in sorted((data / "aerial_extra" / "opencities_accra_gh" / "images").glob("*.png")):
        if int(path.stem.split("_r")[1].split("_")[0]) >= 19:  # Accra rows >= 19 are validation
            continue
        rgb = np.asarray(Image.open(path).convert("RGB"))[:256, :256].transpose(2, 0, 1)
        if rgb.shape[1:] == (256, 256):
            images.append(rgb)
    mean = np.asarray(card.mean, np.float32)[:, None, None] * 255
    std = np.asarray(card.std, np.float32)[:, None, None] * 255
    return [((img.astype(np.float32) - mean) / std)[None] for img in images[:limit]]


def openvino_runner(compiled):
    def run(x: torch.Tensor) -> torch.Tensor:
        out = compiled.create_infer_request().infer([x.detach().contiguous().numpy()])[0]
        return torch.from_numpy(out.copy())

    return run


def speed(predictor: Predictor, batch: int = 4, rounds: int = 4) -> float:
    stack = np.random.default_rng(0).integers(0, 255, (batch, 3, 512, 512), dtype=np.uint8)
    predictor._predict_batch(stack)
    start = time.perf_counter()
    for _ in range(rounds):
        predictor._predict_batch(stack)
    return rounds * batch * 512 * 512 / 1e6 / (time.perf_counter() - start)


def main() -> None:
    import nncf
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", default="aerial-buildings")
    parser.add_argument("--calibration", type=int, default=200, help="training crops used to calibrate")
    args = parser.parse_args()
    model, card = load_checkpoint(args.model)
    xml = openvino_ir_path(model, card.tile_size)
    crops = calibration_crops(args.data, card, args.calibration)
    start = time.perf_counter()
    int8 = nncf.quantize(ov.Core().read_model(xml), nncf.Dataset(crops), subset_size=len(crops))
    quantize_s = time.perf_counter() - start
    compiled = ov.Core().compile_model(int8, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
    tiles, _ = validation_tiles(args.data / "aerial")
    predictors = {
        "openvino fp32": Predictor(model, card, "cpu", batch_size=4, precision="fp32", engine="openvino"),
        "openvino bf16": Predictor(model, card, "cpu", batch_size=4, precision="bf16", engine="openvino"),
        "openvino int8": Predictor(model, card, "cpu", batch_size=4, precision="fp32", engine="openvino"),
    }
    predictors["openvino int8"]._run_model = openvino_runner(compiled)
    masks = {name: [] for name in predictors}
    truth = []
    for tile in tiles:
        with rasterio.open(tile) as ds:
            rgb = ds.read([1, 2, 3])
        mask_path = Path(str(tile).replace("/images/", "/masks/")).with_suffix(".mask.tif")
        with rasterio.open(mask_path) as ds:
            truth.append(ds.read(1) > 0)
        for name, predictor in predictors.items():
            masks[name].append(predictor.predict(rgb, np.ones(rgb.shape[1:], bool)) >= card.threshold)
    reference = np.concatenate([m.ravel() for m in masks["openvino fp32"]])
    gt = np.concatenate([t.ravel() for t in truth])
    rows = []
    for name, predictor in predictors.items():
        pred = np.concatenate([m.ravel() for m in masks[name]])
        rows.append(
            {
                "engine": name,
                "pixel_iou_vs_osm": round(float((pred & gt).sum() / (pred | gt).sum()), 4),
                "pixel_iou_vs_fp32": round(float((pred & reference).sum() / (pred | reference).sum()), 4),
                "model_alone_mpx_s": round(speed(predictor), 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nint8 calibrated on {len(crops)} training crops in {quantize_s:.0f} s; 5 validation tiles\n")
    print("| engine | pixel IoU vs OSM | pixel IoU vs fp32 | model alone Mpx/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['pixel_iou_vs_osm']} | {r['pixel_iou_vs_fp32']} | {r['model_alone_mpx_s']} |")


if __name__ == "__main__":
    main()
