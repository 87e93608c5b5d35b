"""Build sample_data/ from ../shared/data/aerial (OpenAerialMap + SpaceNet; see sample_data/README.md).

.venv/bin/python scripts/make_sample_data.py --data ../shared/data --out sample_data
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import geopandas as gpd
import rasterio
from rasterio.merge import merge
from shapely.geometry import box

KAMPALA_MOSAIC = [(x, y) for y in range(523264, 523268) for x in range(619224, 619228)]
KAMPALA_TILES = ["OAM-309606-261636-19"]
ZANZIBAR_TILES = ["OAM-319297-270996-19", "OAM-319298-270996-19", "OAM-319299-270996-19"]


def build_mosaic(sources: list[Path], destination: Path) -> None:
    """Merge adjacent tiles (same grid) into one tiled GeoTIFF keeping the per-dataset masks."""
    datasets = [rasterio.open(p) for p in sources]
    try:
        image, transform = merge(datasets)
        masks, _ = merge(datasets, indexes=[1], nodata=0, masked=True)
        profile = datasets[0].profile
    finally:
        for ds in datasets:
            ds.close()
    profile.update(
        width=image.shape[2],
        height=image.shape[1],
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        predictor=2,
        nodata=None,
    )
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(destination, "w", **profile) as out:
        out.write(image)
        out.write_mask(~masks.mask[0])


def clip_labels(labels: Path, images: list[Path], destination: Path) -> None:
    """Footprints intersecting the images, kept whole, in EPSG:4326."""
    gdf = gpd.read_file(labels)
    extents = []
    for image in images:
        with rasterio.open(image) as ds:
            extents.append(gpd.GeoSeries([box(*ds.bounds)], crs=ds.crs).to_crs(gdf.crs).iloc[0])
    keep = gdf[gdf.intersects(gpd.GeoSeries(extents, crs=gdf.crs).union_all())]
    keep.to_file(destination, driver="GeoJSON")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("sample_data"))
    args = parser.parse_args()
    aerial = args.data / "aerial"
    images, labels, masks = (args.out / d for d in ("images", "labels", "masks"))
    for folder in (images, labels, masks):
        folder.mkdir(parents=True, exist_ok=True)

    kampala = aerial / "oam_kampala_ug"
    mosaic = images / "kampala_mosaic_z20.tif"
    build_mosaic([kampala / f"images/z20/OAM-{x}-{y}-20.tif" for x, y in KAMPALA_MOSAIC], mosaic)
    build_mosaic(
        [kampala / f"masks/z20/OAM-{x}-{y}-20.mask.tif" for x, y in KAMPALA_MOSAIC],
        masks / "kampala_mosaic_z20.mask.tif",
    )
    kampala_images = [mosaic]
    for name in KAMPALA_TILES:
        shutil.copy(kampala / f"images/z19/{name}.tif", images / f"kampala_{name}.tif")
        shutil.copy(kampala / f"masks/z19/{name}.mask.tif", masks / f"kampala_{name}.mask.tif")
        kampala_images.append(images / f"kampala_{name}.tif")
    clip_labels(kampala / "labels/buildings.geojson", kampala_images, labels / "kampala_buildings.geojson")

    zanzibar = aerial / "oam_zanzibar_tz"
    zanzibar_images = []
    for name in ZANZIBAR_TILES:
        shutil.copy(zanzibar / f"images/z19/{name}.tif", images / f"zanzibar_{name}.tif")
        shutil.copy(zanzibar / f"masks/z19/{name}.mask.tif", masks / f"zanzibar_{name}.mask.tif")
        zanzibar_images.append(images / f"zanzibar_{name}.tif")
    clip_labels(zanzibar / "labels/buildings.geojson", zanzibar_images, labels / "zanzibar_buildings.geojson")

    # The satellite chip is in UTM: kept apart so that images/ holds one CRS (a folder of mixed CRSs is refused).
    atlanta = aerial / "spacenet_atlanta_sn4"
    satellite = args.out / "satellite"
    satellite.mkdir(parents=True, exist_ok=True)
    shutil.copy(next((atlanta / "images").glob("*.tif")), satellite / "atlanta_spacenet_sn4.tif")
    shutil.copy(next((atlanta / "masks").glob("*.tif")), masks / "atlanta_spacenet_sn4.mask.tif")
    clip_labels(
        next((atlanta / "labels").glob("*.geojson")),
        [satellite / "atlanta_spacenet_sn4.tif"],
        labels / "atlanta_buildings.geojson",
    )
    for source in ("oam_kampala_ug", "oam_zanzibar_tz", "spacenet_atlanta_sn4"):
        shutil.copy(aerial / source / "SOURCE.md", args.out / f"SOURCE_{source}.md")


if __name__ == "__main__":
    main()
