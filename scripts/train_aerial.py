"""Train the `aerial-buildings` model from ../shared/data with a cross-city test, on the CPU.

Default protocol (the bundled model): train on Accra (Open Cities) + Zanzibar (OpenAerialMap) + Atlanta (SpaceNet),
select the checkpoint on geographically held-out blocks of Accra and Zanzibar, and test on Kampala, a city the
model never saw, through the full `bldgseg run` pipeline and `bldgseg evaluate` (pixel IoU and polygon F1).
`--test-city zanzibar` runs the reverse experiment (Kampala trains, Zanzibar is unseen).

    .venv/bin/python scripts/train_aerial.py --data ../shared/data --minutes 40 --out runs/aerial
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

from bldgseg.evaluate import evaluate
from bldgseg.pipeline import RunConfig, run
from bldgseg.train.augment import build_augmentation
from bldgseg.train.datasets import TrainSample, load_mask_pairs
from bldgseg.train.trainer import TrainConfig, train

GSD = 0.3
CITIES = {"kampala": "oam_kampala_ug", "zanzibar": "oam_zanzibar_tz"}
LICENCES = {
    "accra": {
        "name": "Open Cities AI Challenge, Accra scene d41d81 (GFDRR/World Bank)",
        "license": "CC BY 4.0; labels OpenStreetMap ODbL",
    },
    "zanzibar": {
        "name": "OpenAerialMap drone imagery, Zanzibar (OIN)",
        "license": "CC BY 4.0; labels OSM ODbL",
    },
    "kampala": {
        "name": "OpenAerialMap drone imagery, Kampala (OIN)",
        "license": "CC BY 4.0; labels OSM ODbL",
    },
    "atlanta": {"name": "SpaceNet 4 Atlanta chip (WorldView-2)", "license": "CC BY-SA 4.0"},
}


def oam_tiles(aerial: Path, city: str) -> tuple[list[Path], Path]:
    """The z19 (~0.3 m) tiles of an OpenAerialMap city and its footprints file."""
    root = aerial / CITIES[city]
    with open(root / "tiles.csv") as f:
        images = [root / r["image"] for r in csv.DictReader(f) if r["z"] == "19"]
    return images, root / "labels" / "buildings.geojson"


def city_samples(aerial: Path, city: str) -> list[TrainSample]:
    root = aerial / CITIES[city]
    return list(load_mask_pairs(root / "images" / "z19", root / "masks" / "z19", target_gsd=GSD))


def held_out_blocks(accra: list[TrainSample], other: list[TrainSample]) -> tuple[list, list]:
    """Validation = the southern Accra rows (>= 19) and the 5 southernmost tiles of the other training city."""
    accra_val = [s for s in accra if int(s.group) >= 19]
    by_row = sorted(other, key=lambda s: int(s.source.split("-")[-2]))
    other_val = by_row[-5:]
    train_set = [s for s in accra if int(s.group) < 19] + by_row[:-5]
    return train_set, accra_val + other_val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/aerial"))
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--test-city", choices=sorted(CITIES), default="kampala")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    aerial = args.data / "aerial"
    train_city = next(c for c in CITIES if c != args.test_city)

    accra = list(
        load_mask_pairs(
            args.data / "aerial_extra/opencities_accra_gh/images",
            args.data / "aerial_extra/opencities_accra_gh/masks",
            target_gsd=GSD,
            source_gsd=0.33,
            group_pattern=r"_r(\d+)_c",
        )
    )
    atlanta = list(
        load_mask_pairs(
            aerial / "spacenet_atlanta_sn4/images", aerial / "spacenet_atlanta_sn4/masks", target_gsd=GSD
        )
    )
    train_set, val_set = held_out_blocks(accra, city_samples(aerial, train_city))
    train_set += atlanta
    print(f"train {len(train_set)} samples, val {len(val_set)}, test city {args.test_city}", flush=True)

    config = TrainConfig(
        name="aerial-buildings",
        architecture="unet",
        encoder="tu-efficientnet_lite0",
        encoder_weights="imagenet",
        gsd_m=GSD,
        crop=256,
        batch_size=8,
        epochs=1000,
        steps_per_epoch=50,
        max_minutes=args.minutes,
        lr=1e-3,
        schedule="cosine",
        loss="dice",
        seed=args.seed,
        device="auto",
        tile_size=512,
        overlap=64,
        training_data=[LICENCES["accra"], LICENCES[train_city], LICENCES["atlanta"]],
        license="Weights: CC BY-SA 4.0 (trained on CC BY-SA 4.0 SpaceNet data; other sources CC BY 4.0 / ODbL)",
    )
    summary = train(
        config,
        train_set,
        val_set,
        args.out,
        build_augmentation(config.crop),
        on_epoch=lambda row: print(json.dumps(row), flush=True),
    )
    print(json.dumps(summary), flush=True)

    images, labels = oam_tiles(aerial, args.test_city)
    with tempfile.TemporaryDirectory() as tmp:
        gpkg = Path(tmp) / "test.gpkg"
        run(RunConfig(inputs=images, output=gpkg, model=str(args.out / "best.safetensors"), device="auto"))
        report = evaluate(gpkg, labels, images=images)
        shutil.copy(gpkg, args.out / f"test_{args.test_city}.gpkg")
    test = {"city": args.test_city, "pixel": report.overall["pixel"], "polygon": report.overall["polygon"]}
    card_path = args.out / "best.json"
    card = json.loads(card_path.read_text())
    card["metrics"][f"test_{args.test_city}_unseen_city"] = test
    card["notes"] = (
        f"Train: Accra rows < 19, {train_city} minus its 5 southern tiles, Atlanta. "
        f"Validation: the held-out blocks. Test: {args.test_city} (never seen), full pipeline."
    )
    card_path.write_text(json.dumps(card, indent=2))
    print(json.dumps(test, indent=2))


if __name__ == "__main__":
    main()
