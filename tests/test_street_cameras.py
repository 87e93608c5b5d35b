"""Tests for bldgseg.street.cameras, .exif and .poses: camera models, EXIF/XMP, pose tables, bad fields."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from bldgseg.errors import InputError
from bldgseg.street.cameras import Camera, focal_from_35mm, hfov_to_focal
from bldgseg.street.exif import exif_pose
from bldgseg.street.poses import PoseFields, lookup_pose, read_pose_table, resolve_pose
from tests.test_street_render import Shot, shot_rays

XMP_PANO = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:GPano="http://ns.google.com/photos/1.0/panorama/" '
    b'GPano:ProjectionType="equirectangular" GPano:PoseHeadingDegrees="12.5">'
    b"<GPano:PosePitchDegrees>-2</GPano:PosePitchDegrees></rdf:Description></rdf:RDF></x:xmpmeta>"
)


def write_gps_jpeg(
    path: Path,
    lon: float,
    lat: float,
    heading: float,
    f35: int = 28,
    orientation: int = 1,
    rgb: np.ndarray | None = None,
) -> Path:
    """A JPEG (grey 400 x 300, or ``rgb``) with an EXIF GPS block (position, true heading) and a 35 mm
    equivalent focal length."""
    image = Image.fromarray(np.full((300, 400, 3), 128, np.uint8) if rgb is None else rgb)
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)

    def dms(value: float) -> tuple:
        deg = int(abs(value))
        minutes = int((abs(value) - deg) * 60)
        seconds = (abs(value) - deg - minutes / 60) * 3600
        return (IFDRational(deg), IFDRational(minutes), IFDRational(round(seconds * 1000), 1000))

    gps[1], gps[2] = ("N" if lat >= 0 else "S"), dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), dms(lon)
    gps[16], gps[17] = "T", IFDRational(round(heading * 100), 100)
    exif.get_ifd(0x8769)[0xA405] = f35
    exif[0x0112] = orientation
    image.save(path, exif=exif)
    return path


def test_exif_gps_pose_is_read_back(tmp_path):
    path = write_gps_jpeg(tmp_path / "a.jpg", lon=-0.1870, lat=5.6037, heading=245.5)
    fields, size = exif_pose(path)
    assert size == (400, 300)
    assert fields.lon == pytest.approx(-0.1870, abs=1e-6) and fields.lat == pytest.approx(5.6037, abs=1e-6)
    assert fields.heading_deg == pytest.approx(245.5) and fields.heading_ref == "T"
    assert fields.focal_px == pytest.approx(28 * 500 / math.hypot(36, 24))
    pose, problems = resolve_pose(path, size, None, fields)
    assert problems == [] and pose.camera.projection == "pinhole"
    assert pose.camera.hfov_deg == pytest.approx(math.degrees(2 * math.atan(400 / (2 * fields.focal_px))))
    assert "pitch assumed 0" in pose.notes and pose.camera_height_m == 1.6


def test_exif_orientation_swaps_the_size(tmp_path):
    path = write_gps_jpeg(tmp_path / "r.jpg", lon=10.0, lat=50.0, heading=0.0, orientation=6)
    _, size = exif_pose(path)
    assert size == (300, 400)


def test_xmp_gpano_panorama_pose(tmp_path):
    path = tmp_path / "pano.jpg"
    Image.fromarray(np.zeros((200, 400, 3), np.uint8)).save(path, xmp=XMP_PANO)
    fields, size = exif_pose(path)
    assert fields.projection == "equirectangular"
    assert fields.heading_deg == 12.5 and fields.pitch_deg == -2.0
    pose, problems = resolve_pose(path, size, PoseFields(lon=1.0, lat=2.0, source="t.csv"), fields)
    assert problems == [] and pose.camera.projection == "equirectangular" and pose.camera.pitch_deg == -2.0


def test_photo_without_any_pose_is_explained(tmp_path):
    path = tmp_path / "plain.jpg"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
    fields, size = exif_pose(path)
    pose, problems = resolve_pose(path, size, None, fields)
    assert pose is None
    assert any("no camera position" in p for p in problems)
    assert any("no heading" in p for p in problems)
    assert any("no field of view" in p for p in problems)


def test_unreadable_photo_raises_input_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="bad.jpg: cannot be read"):
        exif_pose(bad)


def test_pose_csv_aliases_and_overrides(tmp_path):
    csv = tmp_path / "poses.csv"
    csv.write_text(
        "Image,Latitude,Longitude,Yaw,Pitch,Roll,hfov,camera_height_m,projection\n"
        "a.jpg,5.6037,-0.1870,90,3.5,-1,65,2.4,perspective\n"
        "b.JPG,5.6038,-0.1871,180,,,,,\n"
    )
    table = read_pose_table(csv)
    assert set(table) == {"a.jpg", "b.jpg"}
    row = lookup_pose(table, tmp_path / "photos" / "a.jpg")
    pose, problems = resolve_pose(Path("a.jpg"), (640, 480), row, None)
    assert problems == []
    assert pose.camera.heading_deg == 90 and pose.camera.pitch_deg == 3.5 and pose.camera.roll_deg == -1
    assert pose.camera.hfov_deg == pytest.approx(65) and pose.camera_height_m == 2.4
    assert lookup_pose(table, Path("B.jpg")) is table["b.jpg"]


def test_pose_table_wins_over_exif_but_far_apart_positions_contradict(tmp_path):
    path = write_gps_jpeg(tmp_path / "a.jpg", lon=-0.1870, lat=5.6037, heading=10.0)
    exif, size = exif_pose(path)
    near = PoseFields(lon=-0.18701, lat=5.60371, heading_deg=20.0, source="poses.csv")
    pose, problems = resolve_pose(path, size, near, exif)
    assert problems == [] and pose.camera.heading_deg == 20.0 and pose.source == "poses.csv+exif"
    far = PoseFields(lon=-0.1970, lat=5.6037, source="poses.csv")  # ~1.1 km west
    pose, problems = resolve_pose(path, size, far, exif)
    assert pose is None and "from its EXIF GPS position" in problems[0]


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(lat=95.0), "not valid WGS84"),
        (dict(lon=None), "only one of lon/lat"),
        (dict(pitch_deg=120.0), "pitch 120.0 is outside"),
        (dict(hfov_deg=60.0, focal_px=100.0), "disagree"),
        (dict(hfov_deg=200.0), "outside 0..180"),
        (dict(projection="fisheye"), "not supported"),
        (dict(camera_height_m=-1.0), "camera height"),
        (dict(heading_deg=math.nan), "heading nan is not a number"),
    ],
)
def test_contradictory_or_invalid_fields(fields, message):
    base = dict(lon=1.0, lat=2.0, heading_deg=0.0, hfov_deg=60.0, source="poses.csv")
    base.update(fields)
    pose, problems = resolve_pose(Path("x.jpg"), (640, 480), PoseFields(**base), None)
    assert pose is None and any(message in p for p in problems), problems


def test_duplicate_rows_that_disagree_are_reported(tmp_path):
    csv = tmp_path / "poses.csv"
    csv.write_text("photo,lon,lat,heading,hfov\na.jpg,1,2,10,60\na.jpg,1,2,50,60\n")
    row = read_pose_table(csv)["a.jpg"]
    pose, problems = resolve_pose(Path("a.jpg"), (640, 480), row, None)
    assert pose is None and "several different rows" in problems[0]


def test_pose_geojson_uses_point_geometry(tmp_path):
    path = tmp_path / "poses.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", '
        '"geometry": {"type": "Point", "coordinates": [-0.187, 5.6037]}, '
        '"properties": {"photo": "a.jpg", "heading": 45, "focal_px": 500}}]}'
    )
    row = read_pose_table(path)["a.jpg"]
    assert row.lon == pytest.approx(-0.187) and row.lat == pytest.approx(5.6037) and row.focal_px == 500


def test_pose_table_without_photo_column(tmp_path):
    csv = tmp_path / "poses.csv"
    csv.write_text("lon,lat\n1,2\n")
    with pytest.raises(InputError, match="no photo column"):
        read_pose_table(csv)


def test_focal_length_conversions():
    assert hfov_to_focal(90.0, 1000) == pytest.approx(500.0)
    assert focal_from_35mm(36.0, 3000, 2000) == pytest.approx(3000.0)  # 36 mm on 3:2 = 1 x width


@pytest.mark.parametrize("projection", ["pinhole", "equirectangular"])
def test_camera_rays_match_the_renderer_and_project_back(projection):
    shot = Shot(
        0, 0, 1.6, 37.0, 80, 40 if projection == "equirectangular" else 60, 70.0, 12.0, -7.0, projection
    )
    focal = hfov_to_focal(70.0, 80) if projection == "pinhole" else None
    camera = Camera(shot.width, shot.height, projection, focal, 37.0, 12.0, -7.0)
    v, u = np.mgrid[0 : shot.height, 0 : shot.width] + 0.5
    rays = camera.pixel_rays(u, v)
    assert np.allclose(rays, shot_rays(shot), atol=1e-9)
    pu, pv, inside = camera.project(rays)
    assert inside.all() and np.allclose(pu, u) and np.allclose(pv, v)


def test_camera_resized_scales_the_focal_length():
    camera = Camera(4000, 3000, "pinhole", 3000.0, 10.0)
    small = camera.resized(1000, 750)
    assert small.focal_px == 750.0 and small.hfov_deg == pytest.approx(camera.hfov_deg)
