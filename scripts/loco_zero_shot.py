"""Zero-shot scores of bundled models on cities they never trained on, whole-area, through the real pipeline.

The bundled `aerial-buildings` and `aerial-instances` were trained on Accra, Zanzibar and Atlanta only, so every
other city of `../shared/data` is a leave-one-city-out test for them: Kampala (7 OpenAerialMap z19 tiles, OSM
footprints) and the four SpaceNet-2 chips (whole chips as their west + east halves from
`scripts/spacenet2_halves.py`, read as one mosaic). Each model runs through `bldgseg run` and is scored with
`bldgseg evaluate` over the whole area (pixel IoU, polygon F1 at IoU >= 0.5, fragment share).

    .venv/bin/python scripts/spacenet2_halves.py --data ../shared/data --out runs/spacenet2
    .venv/bin/python scripts/loco_zero_shot.py --spacenet2 runs/spacenet2 --out runs/loco \\
        --models aerial-buildings aerial-instances
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bldgseg.adapt.scoring import score_model

SPACENET2_CITIES = {
    "Paris": "AOI_3_Paris_img418",
    "Shanghai": "AOI_4_Shanghai_img945",
    "Khartoum": "AOI_5_Khartoum_img5",
    "Las Vegas": "AOI_2_Vegas_chip",
}


def cities(data: Path, spacenet2: Path | None, zanzibar: bool = False) -> dict[str, tuple[list[Path], Path]]:
    """City name -> (images, footprints) of every city the bundled models never saw (and Zanzibar's 46 z19
    tiles with ``zanzibar``: a test only for models trained without it, ``train_aerial.py --test-city
    zanzibar``)."""
    found = {}
    for city, folder in (("Kampala", "oam_kampala_ug"), ("Zanzibar", "oam_zanzibar_tz")):
        root = data / "aerial" / folder
        if city == "Kampala" or zanzibar:
            found[city] = (sorted((root / "images" / "z19").glob("*.tif")), root / "labels" / "buildings.geojson")
    if spacenet2 is not None:
        for city, stem in SPACENET2_CITIES.items():
            images = [spacenet2 / side / f"{stem}_{side}.tif" for side in ("west", "east")]
            found[city] = (images, spacenet2 / "buildings.geojson")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--spacenet2", type=Path, help="output folder of scripts/spacenet2_halves.py")
    parser.add_argument("--models", nargs="+", default=["aerial-buildings"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--zanzibar", action="store_true", help="also Zanzibar (models trained without it)")
    parser.add_argument("--only", nargs="+", help="only these cities (names as in the table)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for city, (images, footprints) in cities(args.data, args.spacenet2, args.zanzibar).items():
        if args.only and city not in args.only:
            continue
        for model in args.models:
            name = f"{city.lower().replace(' ', '_')}_{Path(model).stem}"
            scores = score_model(model, images, footprints, None, args.out / f"{name}.gpkg", args.device)
            rows.append({"city": city, "model": model, **scores})
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "loco_zero_shot.json").write_text(json.dumps(rows, indent=2))
    print("| city | model | pixel IoU | polygon F1 | P / R | pred / truth | merged | fragment share | scope |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = "n/a" if r["fragment_share"] is None else f"{r['fragment_share']:.1%}"
        print(
            f"| {r['city']} | {r['model']} | {r['pixel_iou']:.3f} | {r['polygon_f1']:.3f} | "
            f"{r['polygon_precision']:.3f} / {r['polygon_recall']:.3f} | {r['n_pred']} / {r['n_truth']} | "
            f"{r['merged']} | {share} | {r['scope']} |"
        )


if __name__ == "__main__":
    main()
