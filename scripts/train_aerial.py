"""Train the `aerial-buildings` model from ../shared/data with a cross-city test, on the CPU.

Default protocol (the bundled model): train on Accra (Open Cities) + Zanzibar (OpenAerialMap) + Atlanta (SpaceNet),
select the checkpoint on geographically held-out blocks of Accra and Zanzibar, and test on Kampala, a city the
model never saw, through the full `bldgseg run` pipeline and `bldgseg evaluate` (pixel IoU and polygon F1).
`--test-city zanzibar` runs the reverse experiment (Kampala trains, Zanzibar is unseen).

`--instances` trains the Panoptic-DeepLab-style `panoptic_unet` instead: the OpenAerialMap and SpaceNet tiles are
read with their footprints (one id per building), Accra's masks train its semantic channel only, and
`--init-weights` can start it from a semantic checkpoint (e.g. the bundled aerial-buildings); tiles with
per-building ids are repeated to about half of the training pool.

    .venv/bin/python scripts/train_aerial.py --data ../shared/data --minutes 40 --out runs/aerial
    .venv/bin/python scripts/train_aerial.py --instances \
        --init-weights bldgseg/models/weights/aerial-buildings.safetensors --minutes 35 \
        --lr 1e-3 --name aerial-instances --out runs/aerial-instances
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

from bldgseg.evaluation import evaluate, write_report
from bldgseg.pipeline import RunConfig, run
from bldgseg.train.augment import build_augmentation
from bldgseg.train.data import TrainSample
from bldgseg.train.datasets import load_mask_pairs
from bldgseg.train.footprint_samples import load_geotiff_footprints
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


def city_samples(aerial: Path, city: str, instances: bool = False) -> list[TrainSample]:
    """A city's z19 tiles with masks, or with per-building ids burned from its footprints."""
    root = aerial / CITIES[city]
    if instances:
        images, labels = oam_tiles(aerial, city)
        return list(load_geotiff_footprints(images, labels, target_gsd=GSD))
    return list(load_mask_pairs(root / "images" / "z19", root / "masks" / "z19", target_gsd=GSD))


def atlanta_samples(aerial: Path, instances: bool = False) -> list[TrainSample]:
    root = aerial / "spacenet_atlanta_sn4"
    if instances:
        return list(load_geotiff_footprints(root / "images", next((root / "labels").glob("*.geojson")), GSD))
    return list(load_mask_pairs(root / "images", root / "masks", target_gsd=GSD))


def held_out_blocks(
    accra: list[TrainSample], other: list[TrainSample], other_val_tiles: int = 5
) -> tuple[list, list]:
    """Validation = the southern Accra rows (>= 19) and the southernmost tiles of the other training city."""
    accra_val = [s for s in accra if int(s.group) >= 19]
    by_row = sorted(other, key=lambda s: int(s.source.split("-")[-2]))
    cut = len(by_row) - other_val_tiles
    train_set = [s for s in accra if int(s.group) < 19] + by_row[:cut]
    return train_set, accra_val + by_row[cut:]


def balance_instance_samples(samples: list[TrainSample]) -> list[TrainSample]:
    """Repeat the samples with per-building ids until they are about half of the pool.

    Only they train the centre and offset heads (Accra's masks cannot tell touching buildings apart); at their
    natural share (~15 %) the offsets barely moved in a CPU-sized run.
    """
    with_ids = [s for s in samples if s.instances is not None]
    without = [s for s in samples if s.instances is None]
    repeat = max(1, round(len(without) / max(1, len(with_ids))))
    return without + with_ids * repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/aerial"))
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--test-city", choices=sorted(CITIES), default="kampala")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="aerial-buildings")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--instances", action="store_true", help="train the panoptic_unet instance model")
    parser.add_argument(
        "--contact-gap",
        type=int,
        default=0,
        help="semantic targets: background within this many px of another building (footprint sources only)",
    )
    parser.add_argument(
        "--val-tiles",
        type=int,
        default=5,
        help="southernmost z19 tiles of the other OAM city held out for validation (Kampala has only 7)",
    )
    parser.add_argument("--init-weights", help="start from this bldgseg checkpoint (.safetensors)")
    parser.add_argument("--cpu-precision", choices=("fp32", "bf16"), default="fp32", help="CPU training precision")
    parser.add_argument("--steps-per-epoch", type=int, default=50, help="training steps between validations")
    parser.add_argument("--no-test", action="store_true", help="train only")
    parser.add_argument("--test-only", action="store_true", help="only test OUT/best.safetensors")
    args = parser.parse_args()
    if not args.test_only:
        train_model(args)
    if not args.no_test:
        test_model(args)


def train_model(args: argparse.Namespace) -> None:
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
    # per-building ids come from the footprints: needed by the instance heads and by the contact gap
    with_ids = args.instances or args.contact_gap > 0
    atlanta = atlanta_samples(aerial, with_ids)
    train_set, val_set = held_out_blocks(accra, city_samples(aerial, train_city, with_ids), args.val_tiles)
    train_set += atlanta
    if args.instances:
        train_set = balance_instance_samples(train_set)
    print(f"train {len(train_set)} samples, val {len(val_set)}, test city {args.test_city}", flush=True)

    config = TrainConfig(
        name=args.name,
        architecture="unet",
        encoder="tu-efficientnet_lite0",
        encoder_weights="imagenet",
        init_weights=args.init_weights,
        instances=args.instances,
        contact_gap=args.contact_gap,
        gsd_m=GSD,
        crop=256,
        batch_size=8,
        epochs=1000,
        steps_per_epoch=args.steps_per_epoch,
        max_minutes=args.minutes,
        lr=args.lr,
        schedule="cosine",
        loss="dice",
        seed=args.seed,
        device="auto",
        cpu_precision=args.cpu_precision,
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


def test_model(args: argparse.Namespace) -> None:
    """Run OUT/best.safetensors on the unseen city through the full pipeline; scores go into its card."""
    aerial = args.data / "aerial"
    train_city = next(c for c in CITIES if c != args.test_city)
    images, labels = oam_tiles(aerial, args.test_city)
    with tempfile.TemporaryDirectory() as tmp:
        gpkg = Path(tmp) / "test.gpkg"
        run(RunConfig(inputs=images, output=gpkg, model=str(args.out / "best.safetensors"), device="auto"))
        report = evaluate(gpkg, labels, images=images)
        shutil.copy(gpkg, args.out / f"test_{args.test_city}.gpkg")
    test = {"city": args.test_city, "pixel": report.overall["pixel"], "polygon": report.overall["polygon"]}
    write_report(report, args.out / f"test_{args.test_city}", overwrite=True)
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
