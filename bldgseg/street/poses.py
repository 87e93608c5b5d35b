"""Camera poses: fields from a CSV/GeoJSON pose table merged with EXIF into a usable pose, or the reasons why not."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyogrio

from bldgseg.errors import InputError
from bldgseg.geo_metric import GEOD
from bldgseg.street.cameras import Camera, hfov_to_focal

__all__ = [
    "NUMERIC_POSE_FIELDS",
    "CameraPose",
    "PoseFields",
    "lookup_pose",
    "read_pose_table",
    "resolve_pose",
]

#: Names accepted for the projection in pose tables and XMP, mapped to ours (Mapillary says perspective/spherical).
PROJECTION_ALIASES = {
    "pinhole": "pinhole",
    "perspective": "pinhole",
    "brown": "pinhole",
    "equirectangular": "equirectangular",
    "spherical": "equirectangular",
    "panorama": "equirectangular",
    "360": "equirectangular",
}
#: Two sources (EXIF and the pose table) giving positions further apart than this contradict each other.
POSE_DISAGREEMENT_M = 100.0
#: A given hfov and focal length (pixels) that disagree by more than this contradict each other.
HFOV_TOLERANCE_DEG = 1.0


@dataclass
class PoseFields:
    """Pose fields of one photo from one source; ``None`` where the source says nothing."""

    lon: float | None = None
    lat: float | None = None
    heading_deg: float | None = None
    pitch_deg: float | None = None
    roll_deg: float | None = None
    hfov_deg: float | None = None
    focal_px: float | None = None
    camera_height_m: float | None = None
    projection: str | None = None
    source: str = ""
    problems: list[str] = field(default_factory=list)
    heading_ref: str | None = None  # EXIF GPSImgDirectionRef: T (true) or M (magnetic)


#: The numeric fields of :class:`PoseFields`, as the pose table columns and the merge of two sources name them.
NUMERIC_POSE_FIELDS = (
    "lon",
    "lat",
    "heading_deg",
    "pitch_deg",
    "roll_deg",
    "hfov_deg",
    "focal_px",
    "camera_height_m",
)


@dataclass(frozen=True)
class CameraPose:
    """A usable pose: where the camera stood (WGS84), how high above the ground, and its model."""

    lon: float
    lat: float
    camera: Camera
    camera_height_m: float
    source: str
    notes: tuple[str, ...] = ()


_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "photo": ("photo", "image", "file", "filename", "file_name", "name", "path"),
    "lon": ("lon", "longitude", "lng", "long"),
    "lat": ("lat", "latitude"),
    "heading_deg": ("heading", "heading_deg", "yaw", "azimuth", "bearing", "compass_angle", "direction"),
    "pitch_deg": ("pitch", "pitch_deg", "tilt"),
    "roll_deg": ("roll", "roll_deg"),
    "hfov_deg": ("hfov", "hfov_deg", "fov", "fov_deg"),
    "focal_px": ("focal_px", "focal_length_px", "f_px", "fx"),
    "camera_height_m": ("camera_height_m", "camera_height", "height_above_ground_m"),
    "projection": ("projection", "camera_type", "projection_type"),
}


def _column_map(columns: list[str]) -> dict[str, str]:
    lower = {c.lower().strip(): c for c in columns}
    found: dict[str, str] = {}
    for key, names in _COLUMN_ALIASES.items():
        for name in names:
            if name in lower:
                found[key] = lower[name]
                break
    return found


def _number(value: Any) -> float | None:
    """A table cell as a float: ``None`` when empty, NaN when present but not a number (reported later)."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return float(value)
        except ValueError:
            return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return None if math.isnan(out) else out


def read_pose_table(path: Path, layer: str | None = None) -> dict[str, PoseFields]:
    """Poses keyed by photo file name (lower case) from a CSV or any OGR point layer (GeoJSON, GeoPackage…).

    Columns (case-insensitive, common aliases accepted): ``photo``, ``lon``, ``lat`` (CSV; point layers may
    use their geometry instead, reprojected to WGS84), ``heading``, ``pitch``, ``roll``, ``hfov`` or
    ``focal_px``, ``camera_height_m``, ``projection`` (pinhole / equirectangular). Rows naming the same photo
    with different values are kept as a problem on that photo.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path.name}: camera pose file not found; check --cameras")
    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        try:
            frame = pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(
                f"{path.name}: cannot read the pose table ({exc}); give a CSV with a header"
            ) from exc
        lonlat = None
    else:
        try:
            frame = pyogrio.read_dataframe(path, layer=layer)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            raise InputError(
                f"{path.name}: cannot read camera poses ({exc}); give a CSV or a point layer"
            ) from exc
        lonlat = None
        if "geometry" in frame and frame.geometry.notna().any():
            geoms = frame.geometry if frame.crs is None else frame.geometry.to_crs(4326)
            points = geoms.where(geoms.geom_type == "Point")
            lonlat = (points.x, points.y)
        frame = pd.DataFrame(frame.drop(columns="geometry", errors="ignore"))
    columns = _column_map([str(c) for c in frame.columns])
    if "photo" not in columns:
        raise InputError(f"{path.name}: no photo column; add one named photo (the photo's file name)")
    has_position = ("lon" in columns and "lat" in columns) or lonlat is not None
    if not has_position:
        raise InputError(
            f"{path.name}: no lon/lat columns or point geometries; add lon and lat (WGS84 degrees)"
        )
    poses: dict[str, PoseFields] = {}
    for i, row in enumerate(frame.itertuples(index=False)):
        values = dict(zip(frame.columns, row, strict=True))
        name = str(values[columns["photo"]]).strip()
        if not name:
            continue
        pose = PoseFields(source=path.name)
        for key in NUMERIC_POSE_FIELDS:
            if key in columns:
                setattr(pose, key, _number(values[columns[key]]))
        if lonlat is not None and (pose.lon is None or pose.lat is None):
            x, y = lonlat[0].iloc[i], lonlat[1].iloc[i]
            if pd.notna(x) and pd.notna(y):
                pose.lon, pose.lat = float(x), float(y)
        if "projection" in columns:
            text = str(values[columns["projection"]] or "").strip().lower()
            pose.projection = text or None
        key = Path(name.replace("\\", "/")).name.lower()
        previous = poses.get(key)
        if previous is not None and _fields(previous) != _fields(pose):
            previous.problems.append(f"{path.name} has several different rows for it")
            continue
        poses[key] = pose
    return poses


def _fields(pose: PoseFields) -> tuple:
    return tuple(getattr(pose, k) for k in NUMERIC_POSE_FIELDS) + (pose.projection,)


def lookup_pose(table: Mapping[str, PoseFields], photo: Path) -> PoseFields | None:
    """The table's row for ``photo`` (matched by file name, then by stem), or ``None``."""
    name = photo.name.lower()
    if name in table:
        return table[name]
    stem = photo.stem.lower()
    matches = [p for k, p in table.items() if Path(k).stem == stem]
    return matches[0] if len(matches) == 1 else None


def _merge(primary: PoseFields | None, secondary: PoseFields | None) -> tuple[PoseFields, list[str]]:
    """Field by field: the pose table wins over EXIF; positions that disagree are a contradiction."""
    problems: list[str] = []
    if secondary is not None and not _has_fields(secondary) and not secondary.problems:
        secondary = None  # e.g. a photo without EXIF
    if primary is None and secondary is None:
        return PoseFields(), problems
    if primary is None or secondary is None:
        only = primary or secondary
        return replace(only, problems=list(only.problems)), list(only.problems)
    merged = PoseFields(source=f"{primary.source}+{secondary.source}")
    for key in (*NUMERIC_POSE_FIELDS, "projection"):
        a, b = getattr(primary, key), getattr(secondary, key)
        setattr(merged, key, a if a is not None else b)
    merged.heading_ref = secondary.heading_ref if primary.heading_deg is None else None
    problems += primary.problems + secondary.problems
    coords = (primary.lon, primary.lat, secondary.lon, secondary.lat)
    if all(c is not None and math.isfinite(c) for c in coords) and _valid_lonlat(*coords[:2], *coords[2:]):
        _, _, dist = GEOD.inv(primary.lon, primary.lat, secondary.lon, secondary.lat)
        if dist > POSE_DISAGREEMENT_M:
            problems.append(
                f"{primary.source} puts the camera {dist:.0f} m from its EXIF GPS position "
                f"(more than {POSE_DISAGREEMENT_M:.0f} m); fix the row or the EXIF"
            )
    return merged, problems


def _has_fields(pose: PoseFields) -> bool:
    return any(v is not None for v in _fields(pose))


def _valid_lonlat(*values: float) -> bool:
    lons, lats = values[0::2], values[1::2]
    return all(-180.0 <= lo <= 180.0 for lo in lons) and all(-90.0 <= la <= 90.0 for la in lats)


def resolve_pose(
    photo: Path,
    size: tuple[int, int],
    table: PoseFields | None,
    exif: PoseFields | None,
    camera_height_m: float = 1.6,
    default_hfov_deg: float | None = None,
) -> tuple[CameraPose | None, list[str]]:
    """Combine the pose table's row and the EXIF fields into a camera pose, or say why there is none.

    Returns ``(pose, problems)``: ``pose`` is ``None`` when a field needed for geometry is missing or the
    fields contradict each other (each reason one short phrase in ``problems``). Pitch and roll default to 0
    (level camera) and the camera height to ``camera_height_m``; those assumptions are listed in ``notes``.
    """
    width, height = size
    fields, problems = _merge(table, exif)
    notes: list[str] = []
    if fields.lon is None and fields.lat is None:
        problems.append("no camera position (no GPS in EXIF, no row in --cameras); add lon/lat to --cameras")
    elif fields.lon is None or fields.lat is None:
        problems.append("only one of lon/lat is given; give both")
    elif not (
        math.isfinite(fields.lon) and math.isfinite(fields.lat) and _valid_lonlat(fields.lon, fields.lat)
    ):
        problems.append(f"position lon={fields.lon}, lat={fields.lat} is not valid WGS84 degrees")
    projection = PROJECTION_ALIASES.get((fields.projection or "").lower()) if fields.projection else None
    if fields.projection and projection is None:
        problems.append(f"projection {fields.projection!r} is not supported; use pinhole or equirectangular")
    if projection is None and not fields.projection:
        is_pano = abs(width - 2 * height) <= 2 and fields.focal_px is None and fields.hfov_deg is None
        projection = "equirectangular" if is_pano else "pinhole"
        if is_pano:
            notes.append("projection assumed equirectangular (2:1 image, no focal length)")
    if projection == "equirectangular" and abs(width / height - 2.0) > 0.02:
        problems.append(f"panorama is {width}x{height}, not 2:1; give a full equirectangular image")
    if fields.heading_deg is None:
        problems.append("no heading (GPSImgDirection or heading column); add the camera heading")
    elif not math.isfinite(fields.heading_deg):
        problems.append(f"heading {fields.heading_deg} is not a number")
    elif fields.heading_ref == "M":
        notes.append("heading is magnetic (GPSImgDirectionRef M), used as true north")
    pitch = 0.0 if fields.pitch_deg is None else fields.pitch_deg
    roll = 0.0 if fields.roll_deg is None else fields.roll_deg
    if fields.pitch_deg is None:
        notes.append("pitch assumed 0")
    if not (math.isfinite(pitch) and -90.0 <= pitch <= 90.0):
        problems.append(f"pitch {pitch} is outside -90..90 degrees")
    if not (math.isfinite(roll) and -180.0 <= roll <= 180.0):
        problems.append(f"roll {roll} is outside -180..180 degrees")
    cam_h = camera_height_m if fields.camera_height_m is None else fields.camera_height_m
    if fields.camera_height_m is None:
        notes.append(f"camera height assumed {camera_height_m:g} m")
    if not (math.isfinite(cam_h) and 0.0 < cam_h < 100.0):
        problems.append(f"camera height {cam_h} m is outside 0..100 m")
    focal = None
    if projection == "pinhole":
        focal = _focal(fields, width, default_hfov_deg, problems)
    if problems:
        return None, problems
    camera = Camera(
        width=width,
        height=height,
        projection=projection,
        focal_px=focal,
        heading_deg=float(fields.heading_deg) % 360.0,
        pitch_deg=float(pitch),
        roll_deg=float(roll),
    )
    pose = CameraPose(float(fields.lon), float(fields.lat), camera, float(cam_h), fields.source, tuple(notes))
    return pose, []


def _focal(
    fields: PoseFields, width: int, default_hfov_deg: float | None, problems: list[str]
) -> float | None:
    hfov, focal = fields.hfov_deg, fields.focal_px
    for name, value in (("hfov", hfov), ("focal_px", focal)):
        if value is not None and not math.isfinite(value):
            problems.append(f"{name} {value} is not a number")
            return None
    if hfov is not None and not 0.0 < hfov < 180.0:
        problems.append(f"hfov {hfov} is outside 0..180 degrees for a pinhole photo")
        return None
    if focal is not None and focal <= 0:
        problems.append(f"focal_px {focal} is not positive")
        return None
    if hfov is not None and focal is not None:
        implied = math.degrees(2.0 * math.atan(width / (2.0 * focal)))
        if abs(implied - hfov) > HFOV_TOLERANCE_DEG:
            problems.append(
                f"hfov {hfov:g} and focal_px {focal:g} disagree (the focal length gives {implied:.1f} degrees "
                f"for {width} px); give one of them"
            )
            return None
    if focal is not None:
        return float(focal)
    if hfov is not None:
        return hfov_to_focal(hfov, width)
    if default_hfov_deg is not None:
        return hfov_to_focal(default_hfov_deg, width)
    problems.append("no field of view (FocalLengthIn35mmFilm, hfov or focal_px); add hfov to --cameras")
    return None
