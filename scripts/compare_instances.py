"""Instance vs semantic models on an unseen city: polygon F1, building-count error, merged and split buildings.

Each model runs through the full `bldgseg run` pipeline on the city's z19 OpenAerialMap tiles and is scored with
`bldgseg evaluate` against the OpenStreetMap footprints (the cross-city test of `scripts/train_aerial.py`).
A model given as `PATH:semantic` runs its building channel alone (no instance grouping), which separates what
the instance head adds from what its extra training changed.

    .venv/bin/python scripts/compare_instances.py aerial-buildings \\
        runs/aerial-instances/best.safetensors:semantic runs/aerial-instances/best.safetensors
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from train_aerial import oam_tiles  # scripts/ is on sys.path when run as a script

from bldgseg.evaluation import evaluate
from bldgseg.pipeline import RunConfig, run


def score(model: str, images: list[Path], labels: Path, instances: bool | None, **options) -> dict:
    """Run ``model`` on ``images`` through the pipeline and score it against ``labels`` (pixel and polygon)."""
    with tempfile.TemporaryDirectory() as tmp:
        gpkg = Path(tmp) / "test.gpkg"
        start = time.perf_counter()
        run(RunConfig(inputs=images, output=gpkg, model=model, device="auto", instances=instances, **options))
        seconds = time.perf_counter() - start
        report = evaluate(gpkg, labels, images=images)
    polygon, pixel = report.overall["polygon"], report.overall["pixel"]
    return {
        "model": model,
        "instances": instances,
        "pixel_iou": pixel["iou"],
        "f1": polygon["f1"],
        "precision": polygon["precision"],
        "recall": polygon["recall"],
        "predicted": polygon["n_pred"],
        "truth": polygon["n_truth"],
        "count_error_relative": polygon["count_error_relative"],
        "merged": polygon["merged"],
        "split": polygon["split"],
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model names or checkpoints; PATH:semantic = no instances")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--city", choices=["kampala", "zanzibar"], default="kampala")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    images, labels = oam_tiles(args.data / "aerial", args.city)
    rows = []
    for spec in args.models:
        model, _, mode = spec.partition(":")
        row = score(model, images, labels, False if mode == "semantic" else None, tta=args.tta)
        row["model"] = spec
        rows.append(row)
        print(json.dumps(row), flush=True)
    header = "| model | pixel IoU | polygon F1 | P | R | predicted / true | count error | merged | split |"
    title = f"{args.city}, {len(images)} tiles{' (TTA)' if args.tta else ''}"
    print(f"\n{title}\n\n{header}\n" + "|---" * 9 + "|")
    for r in rows:
        print(
            f"| {r['model']} | {r['pixel_iou']:.3f} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['predicted']} / {r['truth']} | {r['count_error_relative']:+.1%} | {r['merged']} | {r['split']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
