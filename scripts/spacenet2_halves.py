"""Cut the four SpaceNet-2 chips into west halves (to adapt on) and east halves (to test on), with footprints.

The bundled default never saw these cities (Las Vegas, Paris, Shanghai, Khartoum), so they stand in for "a
user's region" when choosing `bldgseg adapt`'s settings without touching a test city. The PNG chips have no
georeference: they get a made-up 0.3 m UTM grid (EPSG:32636, 1 km apart). Footprints are the masks' connected
building regions as polygons (touching buildings stay one polygon), in EPSG:4326.

    .venv/bin/python scripts/spacenet2_halves.py --data ../shared/data --out runs/spacenet2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from PIL import Image
from rasterio.transform import from_origin

PNG_CHIPS = ("AOI_3_Paris_img418", "AOI_4_Shanghai_img945", "AOI_5_Khartoum_img5")
VEGAS = "AOI_2_Vegas_chip"


def chips(root: Path):
    """(name, image (bands, H, W), mask (H, W), crs, transform) of the four chips."""
    for n, name in enumerate(PNG_CHIPS):
        image = np.asarray(Image.open(root / "images" / f"{name}.png").convert("RGB")).transpose(2, 0, 1)
        mask = np.asarray(Image.open(root / "masks" / f"{name}.png"))
        yield name, image, mask, "EPSG:32636", from_origin(500000.0 + 1000.0 * n, 100000.0, 0.3, 0.3)
    with rasterio.open(root / "images" / f"{VEGAS}.tif") as ds:
        image, crs, transform = ds.read(), ds.crs, ds.transform
    with rasterio.open(root / "masks" / f"{VEGAS}.tif") as ds:
        mask = ds.read(1)
    yield VEGAS, image, mask, crs, transform


def write_half(path: Path, image: np.ndarray, crs, transform, cols: slice) -> None:
    data = image[:, :, cols]
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=crs,
        transform=transform * rasterio.Affine.translation(cols.start or 0, 0),
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/spacenet2"))
    args = parser.parse_args()
    root = args.data / "aerial_extra" / "spacenet2_samples"
    for side in ("west", "east"):
        (args.out / side).mkdir(parents=True, exist_ok=True)
    frames = []
    for name, image, mask, crs, transform in chips(root):
        half = image.shape[2] // 2
        write_half(args.out / "west" / f"{name}_west.tif", image, crs, transform, slice(0, half))
        write_half(args.out / "east" / f"{name}_east.tif", image, crs, transform, slice(half, None))
        shapes = rasterio.features.shapes(mask.astype(np.uint8), mask=mask == 1, transform=transform)
        polygons = [shapely.geometry.shape(geom) for geom, _ in shapes]
        frames.append(
            gpd.GeoDataFrame({"chip": [name] * len(polygons)}, geometry=polygons, crs=crs).to_crs("EPSG:4326")
        )
        print(f"{name}: {len(polygons)} building regions")
    footprints = gpd.GeoDataFrame(gpd.pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    footprints.to_file(args.out / "buildings.geojson")
    print(f"{len(footprints)} footprints -> {args.out / 'buildings.geojson'}")


if __name__ == "__main__":
    main()
