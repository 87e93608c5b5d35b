"""Make a checkpoint's int8 OpenVINO IR (`--precision int8`): NNCF post-training quantization on training crops.

The fp32 IR is the one `bldgseg.engines` caches; calibration uses training crops only (the Zanzibar z19 tiles
that are not validation tiles, and Accra chips of the training rows); accuracy is pixel IoU on the 5 held-out
Zanzibar validation tiles against the OSM masks and against fp32, through `Predictor(precision="int8")` (the code
path `bldgseg run --precision int8` takes); speed is the model alone on 512-px batches. The IR is written beside
the weights as `<name>.int8.xml/.bin` and recorded in the card (`int8`: the weights' file digest, calibration,
measured accuracy) only when int8 keeps pixel IoU against OSM within 0.005 of fp32 (`--force` writes anyway).
NNCF is a build-time tool, not a dependency: `pip install --target ../nncf-site --no-deps nncf==3.4.0 tabulate`.

    PYTHONPATH=../nncf-site .venv/bin/python scripts/quantize_int8.py --model aerial-buildings
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from tune_instances import validation_tiles  # scripts/ is on sys.path when run as a script

from bldgseg.engines import file_digest, openvino_ir_path
from bldgseg.inference import Predictor
from bldgseg.models import load_card, load_checkpoint


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


def speed(predictor: Predictor, batch: int = 4, rounds: int = 4) -> float:
    stack = np.random.default_rng(0).integers(0, 255, (batch, 3, 512, 512), dtype=np.uint8)
    predictor.predict_batch(stack)
    start = time.perf_counter()
    for _ in range(rounds):
        predictor.predict_batch(stack)
    return rounds * batch * 512 * 512 / 1e6 / (time.perf_counter() - start)


def validation_masks(predictors: dict, tiles: list[Path], threshold: float) -> tuple[dict, np.ndarray]:
    """Each predictor's masks of the validation tiles (flattened) and the OSM masks."""
    masks: dict[str, list[np.ndarray]] = {name: [] for name in predictors}
    truth = []
    for tile in tiles:
        with rasterio.open(tile) as ds:
            rgb = ds.read([1, 2, 3])
        mask_path = Path(str(tile).replace("/images/", "/masks/")).with_suffix(".mask.tif")
        with rasterio.open(mask_path) as ds:
            truth.append(ds.read(1) > 0)
        for name, predictor in predictors.items():
            masks[name].append(predictor.predict(rgb, np.ones(rgb.shape[1:], bool)) >= threshold)
    flat = {name: np.concatenate([m.ravel() for m in found]) for name, found in masks.items()}
    return flat, np.concatenate([t.ravel() for t in truth])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return round(float((a & b).sum() / (a | b).sum()), 4)


def main() -> None:
    import nncf
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", default="aerial-buildings")
    parser.add_argument("--calibration", type=int, default=200, help="training crops used to calibrate")
    parser.add_argument("--force", action="store_true", help="write the IR even if it loses more than 0.005 IoU")
    args = parser.parse_args()
    weights, card = load_card(args.model)
    model, _ = load_checkpoint(args.model)
    xml = openvino_ir_path(model, card.tile_size)
    crops = calibration_crops(args.data, card, args.calibration)
    start = time.perf_counter()
    int8 = nncf.quantize(ov.Core().read_model(xml), nncf.Dataset(crops), subset_size=len(crops))
    quantize_s = time.perf_counter() - start
    out = weights.with_name(f"{weights.stem}.int8.xml")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(int8, str(staged), compress_to_fp16=False)
        tiles, _ = validation_tiles(args.data / "aerial")
        predictors = {
            name: Predictor(model, card, "cpu", batch_size=4, precision=precision, engine="openvino", int8_ir=staged)
            for name, precision in (("fp32", "fp32"), ("bf16", "bf16"), ("int8", "int8"))
        }
        masks, truth = validation_masks(predictors, tiles, card.threshold)
        rows = [
            {
                "precision": name,
                "pixel_iou_vs_osm": iou(masks[name], truth),
                "pixel_iou_vs_fp32": iou(masks[name], masks["fp32"]),
                "model_alone_mpx_s": round(speed(predictor), 3),
            }
            for name, predictor in predictors.items()
        ]
        for row in rows:
            print(json.dumps(row), flush=True)
        loss = rows[0]["pixel_iou_vs_osm"] - rows[2]["pixel_iou_vs_osm"]
        if loss > 0.005 and not args.force:
            raise SystemExit(f"int8 loses {loss:.4f} pixel IoU against fp32 (> 0.005): not written (--force)")
        for suffix in (".xml", ".bin"):
            shutil.copy(staged.with_suffix(suffix), out.with_suffix(suffix))
    card_path = weights.with_suffix(".json")
    data = json.loads(card_path.read_text())
    data["int8"] = {
        "ir": out.name,
        "weights_file_digest": file_digest(weights),
        "method": f"NNCF {nncf.__version__} post-training quantization (default preset) of the OpenVINO "
        f"{ov.get_version().split('-')[0]} IR",
        "calibration": f"{len(crops)} training crops (Zanzibar z19 training tiles, Accra training rows)",
        "validation": "the 5 held-out southern Zanzibar z19 tiles, pixel IoU against the OSM masks and fp32",
        "rows": rows,
        "script": "scripts/quantize_int8.py",
    }
    card_path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nint8 calibrated on {len(crops)} training crops in {quantize_s:.0f} s; wrote {out.name} and the card")
    print("| precision | pixel IoU vs OSM | pixel IoU vs fp32 | model alone Mpx/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['pixel_iou_vs_osm']} | {r['pixel_iou_vs_fp32']} | {r['model_alone_mpx_s']} |")


if __name__ == "__main__":
    main()
