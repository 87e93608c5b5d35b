"""Pixel IoU of a `bldgseg run` GeoPackage against the sample labels, per image and overall.

    .venv/bin/bldgseg run sample_data/images -o out/sample.gpkg --overwrite
    .venv/bin/python scripts/eval_sample.py out/sample.gpkg

Predicted polygons and the OpenStreetMap/SpaceNet footprints are both rasterized on each image's own grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
from rasterio.features import rasterize

REPO = Path(__file__).resolve().parents[1]
LABELS = {
    "kampala": "labels/kampala_buildings.geojson",
    "zanzibar": "labels/zanzibar_buildings.geojson",
    "atlanta": "labels/atlanta_buildings.geojson",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gpkg", type=Path)
    parser.add_argument("--sample", type=Path, default=REPO / "sample_data")
    args = parser.parse_args()
    predicted = pyogrio.read_dataframe(args.gpkg, layer="buildings")
    rows, totals = [], {}
    images = sorted((args.sample / "images").glob("*.tif")) + sorted(
        (args.sample / "satellite").glob("*.tif")
    )
    for image in images:
        city = image.name.split("_")[0]
        labels = gpd.read_file(args.sample / LABELS[city])
        with rasterio.open(image) as ds:
            shape, transform, crs = (ds.height, ds.width), ds.transform, ds.crs
            valid = ds.dataset_mask() > 0
        mine = predicted[predicted.source_image.map(lambda p: Path(p).name) == image.name].to_crs(crs)
        pred = (
            rasterize(mine.geometry, out_shape=shape, transform=transform) > 0
            if len(mine)
            else np.zeros(shape, bool)
        )
        truth = rasterize(labels.to_crs(crs).geometry, out_shape=shape, transform=transform) > 0
        pred &= valid
        truth &= valid
        tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
        rows.append(
            {
                "image": image.name,
                "buildings": len(mine),
                "iou": round(tp / max(1, tp + fp + fn), 3),
                "precision": round(tp / max(1, tp + fp), 3),
                "recall": round(tp / max(1, tp + fn), 3),
            }
        )
        acc = totals.setdefault(city, [0, 0, 0])
        acc[0] += tp
        acc[1] += fp
        acc[2] += fn
    for row in rows:
        print(json.dumps(row))
    for city, (tp, fp, fn) in totals.items():
        print(
            json.dumps(
                {
                    "city": city,
                    "pixel_iou": round(tp / max(1, tp + fp + fn), 3),
                    "precision": round(tp / max(1, tp + fp), 3),
                    "recall": round(tp / max(1, tp + fn), 3),
                }
            )
        )


if __name__ == "__main__":
    main()
