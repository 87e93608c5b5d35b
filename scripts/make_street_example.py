"""Render the bundled street-level example into sample_data/street/ (photos, poses, footprints, label masks).

Everything is rendered by the project's own test ray-caster (tests/test_street_render.py): box buildings with
window rows on a flat street, seen from pinhole cameras and one equirectangular panorama. No third-party
photos are used. ``truth.csv`` holds each building's true height, floors and street-facing wall length.

.venv/bin/python scripts/make_street_example.py --out sample_data/street
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from PIL import Image
from PIL.TiffImagePlugin import IFDRational
from pyproj import Geod

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bldgseg.palettes import LABELMEFACADE_PALETTE  # noqa: E402
from bldgseg.street.cameras import focal_from_35mm  # noqa: E402
from bldgseg.street.parsing import save_labels  # noqa: E402
from tests.test_street_render import CAR, VEGETATION, Box, Shot, render  # noqa: E402

#: Where the street lies (a made-up place; local metres are east/north of it, true north).
LON0, LAT0 = 8.2, 47.05
GEOD = Geod(ellps="WGS84")

# A street along x (east) with buildings on both sides; the south row is turned 180 degrees so that every
# building's door and local y = 0 wall face the street. Names only label the truth table.
BUILDINGS = {
    "north_1": Box(-30.0, 9.0, 12.0, 10.0, 9.0, storeys=3, colour=(214, 196, 160)),
    "north_2": Box(-16.0, 9.0, 12.0, 10.0, 12.4, storeys=4, storey_m=3.1, colour=(170, 180, 190)),
    "north_3": Box(-2.0, 9.0, 10.0, 9.0, 6.0, storeys=2, colour=(165, 85, 60)),
    "north_4": Box(10.0, 9.0, 14.0, 12.0, 15.0, storeys=5, colour=(230, 228, 220)),
    "courtyard": Box(-14.0, 24.0, 8.0, 8.0, 8.0, storeys=2, colour=(200, 200, 170)),  # hidden behind north_2
    "south_1": Box(
        -10.0, -9.0, 14.0, 10.0, 7.0, storeys=2, storey_m=3.5, angle_deg=180.0, colour=(225, 200, 110)
    ),
    "south_2": Box(
        12.0, -9.0, 18.0, 11.0, 10.5, storeys=3, storey_m=3.5, angle_deg=180.0, colour=(150, 160, 120)
    ),
}
OTHERS = [
    Box(-26.0, 5.2, 4.4, 1.8, 1.5, label=CAR),
    Box(-1.0, 5.4, 4.2, 1.8, 1.45, label=CAR),
    Box(4.0, -7.2, 4.5, 1.8, 1.5, label=CAR),
    Box(-17.2, 6.4, 1.0, 1.0, 6.0, label=VEGETATION),
]
EXIF_F35 = 26  # photo_03's 35 mm equivalent focal length, written into its EXIF
EXIF_HFOV = math.degrees(2 * math.atan(960 / (2 * focal_from_35mm(EXIF_F35, 960, 720))))
SHOTS = {
    # name: (shot, how its pose is given)
    "photo_01.jpg": (Shot(-22.0, -1.0, 2.2, 0.0, 960, 720, 75.0), "csv"),
    "photo_02.jpg": (Shot(-5.0, -5.0, 2.2, 335.0, 960, 720, 75.0, pitch_deg=15.0), "csv"),
    "photo_03.jpg": (Shot(10.0, -3.0, 1.6, 12.0, 960, 720, EXIF_HFOV), "exif"),
    "photo_04.jpg": (Shot(2.0, 2.0, 1.6, 180.0, 960, 720, 80.0, roll_deg=2.0), "csv"),
    "pano_05.jpg": (
        Shot(-12.0, 0.0, 2.5, 90.0, 1600, 800, projection="equirectangular", pitch_deg=3.0, roll_deg=-2.0),
        "csv",
    ),
    "photo_06.jpg": (Shot(18.0, 0.0, 1.6, 30.0, 960, 720, 70.0), "none"),
}


def lonlat(x: float, y: float) -> tuple[float, float]:
    """Local metres east/north of (LON0, LAT0) -> WGS84 degrees."""
    if x == 0 and y == 0:
        return LON0, LAT0
    lon, lat, _ = GEOD.fwd(LON0, LAT0, math.degrees(math.atan2(x, y)), math.hypot(x, y))
    return lon, lat


def gps_exif(lon: float, lat: float, heading: float, f35: int) -> Image.Exif:
    """EXIF with a GPS block (position, true heading) and a 35 mm equivalent focal length."""
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)

    def dms(value: float) -> tuple:
        deg = int(abs(value))
        minutes = int((abs(value) - deg) * 60)
        seconds = (abs(value) - deg - minutes / 60) * 3600
        return (IFDRational(deg), IFDRational(minutes), IFDRational(round(seconds * 10000), 10000))

    gps[1], gps[2] = ("N" if lat >= 0 else "S"), dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), dms(lon)
    gps[16], gps[17] = "T", IFDRational(round(heading * 100), 100)
    exif.get_ifd(0x8769)[0xA405] = f35
    return exif


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "sample_data" / "street")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality")
    args = parser.parse_args()
    out: Path = args.out
    for sub in ("photos", "labels"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    boxes = list(BUILDINGS.values())
    footprints = gpd.GeoDataFrame(
        {"building_id": range(1, len(boxes) + 1), "name": list(BUILDINGS)},
        geometry=[shapely.Polygon([lonlat(*c) for c in b.corners()]) for b in boxes],
        crs=4326,
    )
    target = out / "footprints.geojson"
    target.unlink(missing_ok=True)
    footprints.to_file(target, driver="GeoJSON", COORDINATE_PRECISION=8)
    truth = pd.DataFrame(
        {
            "building_id": footprints["building_id"],
            "name": list(BUILDINGS),
            "height_m": [b.height for b in boxes],
            "floors": [b.storeys for b in boxes],
            "facade_width_m": [b.length for b in boxes],
            "front_window_wall_ratio": [round(b.window_wall_ratio(b.length), 4) for b in boxes],
        }
    )
    truth.to_csv(out / "truth.csv", index=False)
    rows = []
    for seed, (name, (shot, pose)) in enumerate(SHOTS.items()):
        labels, rgb = render(boxes + OTHERS, shot, with_rgb=True, seed=seed)
        lon, lat = lonlat(shot.x, shot.y)
        if pose == "exif":
            exif = gps_exif(lon, lat, shot.heading_deg, EXIF_F35)
            Image.fromarray(rgb).save(out / "photos" / name, quality=args.quality, exif=exif)
        else:
            Image.fromarray(rgb).save(out / "photos" / name, quality=args.quality)
        save_labels(out / "labels" / f"{Path(name).stem}.png", labels, LABELMEFACADE_PALETTE)
        if pose == "csv":
            rows.append(
                {
                    "photo": name,
                    "lon": round(lon, 8),
                    "lat": round(lat, 8),
                    "heading": shot.heading_deg,
                    "pitch": shot.pitch_deg,
                    "roll": shot.roll_deg,
                    "hfov": "" if shot.projection != "pinhole" else round(shot.hfov_deg, 4),
                    "camera_height_m": shot.height_m,
                    "projection": shot.projection,
                }
            )
    pd.DataFrame(rows).to_csv(out / "cameras.csv", index=False)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
