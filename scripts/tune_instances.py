"""Choose an instance model's centre threshold and NMS window on held-out validation tiles (not the test city).

The validation tiles are the 5 southernmost Zanzibar z19 tiles that `scripts/train_aerial.py` holds out; each
setting runs the full `bldgseg run` pipeline on them and is scored by polygon F1 (`bldgseg evaluate`). With
`--write` the best setting goes into the checkpoint's card (`center_threshold`, `nms_kernel`).

    .venv/bin/python scripts/tune_instances.py runs/aerial-instances/best.safetensors --write
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
from pathlib import Path

from compare_instances import score  # scripts/ is on sys.path when run as a script
from train_aerial import oam_tiles


def validation_tiles(aerial: Path) -> tuple[list[Path], Path]:
    images, labels = oam_tiles(aerial, "zanzibar")
    return sorted(images, key=lambda p: int(p.stem.split("-")[-2]))[-5:], labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--thresholds", default="0.1,0.2,0.3,0.4,0.5")
    parser.add_argument("--kernels", default="7,13,19,25")
    parser.add_argument(
        "--write", action="store_true", help="store the best setting in the checkpoint's card"
    )
    args = parser.parse_args()
    images, labels = validation_tiles(args.data / "aerial")
    card_path = args.checkpoint.with_suffix(".json")
    card = json.loads(card_path.read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threshold, kernel in itertools.product(
            (float(v) for v in args.thresholds.split(",")), (int(v) for v in args.kernels.split(","))
        ):
            # one file per setting: the pipeline caches a loaded model (and its card) by path
            weights = Path(tmp) / f"model_{threshold}_{kernel}.safetensors"
            shutil.copy(args.checkpoint, weights)
            weights.with_suffix(".json").write_text(
                json.dumps({**card, "center_threshold": threshold, "nms_kernel": kernel})
            )
            scores = score(str(weights), images, labels, instances=None)
            row = {"center_threshold": threshold, "nms_kernel": kernel}
            row.update({k: scores[k] for k in ("f1", "count_error_relative", "merged", "split")})
            rows.append(row)
            print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: (r["f1"] or 0.0, -abs(r["count_error_relative"] or 0.0)))
    print(f"best on validation: {json.dumps(best)}")
    if args.write:
        card.update(center_threshold=best["center_threshold"], nms_kernel=best["nms_kernel"])
        card.setdefault("metrics", {})["instance_tuning_validation"] = {
            "tiles": [p.name for p in images],
            "grid": rows,
            "chosen": best,
        }
        card_path.write_text(json.dumps(card, indent=2))
        print(f"wrote {card_path}")


if __name__ == "__main__":
    main()
