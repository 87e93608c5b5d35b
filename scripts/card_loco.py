"""Write leave-one-city-out numbers into a bundled model card's metrics.

Takes the JSON of `scripts/loco_zero_shot.py` (zero-shot, whole area, per unseen city) and, optionally, the
`sweep.json` of `scripts/adapt_settings.py` run with `--settings default` (zero-shot vs `bldgseg adapt` on a split
of one unseen city), and stores them under `metrics.leave_one_city_out` and `metrics.adapt_<city>` of the card.

    .venv/bin/python scripts/card_loco.py bldgseg/models/weights/aerial-buildings.json \\
        --loco runs/loco/loco_zero_shot.json --adapt runs/kampala-adapt/sweep.json --adapt-city kampala
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

KEYS = ("pixel_iou", "polygon_f1", "polygon_precision", "polygon_recall", "n_pred", "n_truth", "merged")
#: Cities whose data chose a default of the bundled models (post-processing, adapt settings): not clean tests.
VALIDATION_CITIES = {"Paris", "Shanghai", "Khartoum", "Las Vegas"}


def _round(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key in (*KEYS, "fragment_share"):
        value = row.get(prefix + key)
        out[key] = round(value, 4) if isinstance(value, float) else value
    return out


def loco_metrics(rows: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Per-city zero-shot scores of ``model`` from loco_zero_shot.py rows."""
    cities = {}
    for row in rows:
        if Path(row["model"]).stem == model:
            cities[row["city"]] = {**_round(row), "clean_test": row["city"] not in VALIDATION_CITIES}
    return {
        "protocol": "scripts/loco_zero_shot.py: bldgseg run + bldgseg evaluate, whole area, on cities the model "
        "never trained on; clean_test false = post-processing and adapt settings were chosen on that city's data",
        "cities": cities,
    }


def adapt_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Zero-shot vs adapted test scores from an adapt_settings.py sweep.json."""
    zero, adapted = rows[0], rows[1]
    return {
        "protocol": "scripts/adapt_settings.py --settings default: bldgseg adapt (default settings) on the --adapt "
        "tiles, then bldgseg run + evaluate (whole area) on the --test tiles of the same city",
        "steps": adapted["steps"],
        "minutes": adapted["minutes_trained"],
        "zero_shot": _round(zero, "test_"),
        "adapted": _round(adapted, "test_"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path)
    parser.add_argument("--loco", type=Path, required=True)
    parser.add_argument("--adapt", type=Path)
    parser.add_argument("--adapt-city", default="kampala")
    args = parser.parse_args()
    card = json.loads(args.card.read_text())
    card["metrics"]["leave_one_city_out"] = loco_metrics(json.loads(args.loco.read_text()), card["name"])
    if args.adapt:
        card["metrics"][f"adapt_{args.adapt_city}"] = adapt_metrics(json.loads(args.adapt.read_text()))
    args.card.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote leave-one-city-out metrics into {args.card}")


if __name__ == "__main__":
    main()
