"""``bldgseg street``: photos + poses + footprints -> facade observations and per-building street attributes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from bldgseg import __version__
from bldgseg.errors import InputError, ModelError
from bldgseg.export import errors_table, write_gpkg
from bldgseg.files import refuse_existing, require_gpkg
from bldgseg.footprints import read_footprints
from bldgseg.geo_metric import WGS84, grid_factors, utm_epsg
from bldgseg.palettes import LABELMEFACADE_CLASSES, LABELMEFACADE_PALETTE, Palette
from bldgseg.progress import ProgressFn, report_progress
from bldgseg.street.aggregate import OBSERVATION_COLUMNS, aggregate_observations, join_street
from bldgseg.street.exif import exif_pose, load_image
from bldgseg.street.geometry import ClassRoles, measure_photo
from bldgseg.street.parsing import (
    DEFAULT_FACADE_MODEL,
    FacadeParser,
    load_labels,
    resize_rgb,
    save_labels,
    working_size,
)
from bldgseg.street.poses import CameraPose, PoseFields, lookup_pose, read_pose_table, resolve_pose
from bldgseg.street.walls import Footprints

__all__ = ["PHOTO_SUFFIXES", "StreetConfig", "StreetResult", "PhotoProblem", "discover_photos", "run_street"]

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class StreetConfig:
    """Options of one street job (the CLI flags of ``bldgseg street``)."""

    photos: Sequence[Path]
    footprints: Path
    output: Path
    cameras: Path | None = None
    footprints_layer: str | None = None
    model: str = DEFAULT_FACADE_MODEL
    labels: Path | None = None
    label_classes: Sequence[str] | None = None
    save_labels: Path | None = None
    device: str = "auto"
    batch_size: int = 4
    tta: bool = False
    max_side: int = 1024
    pano_max_side: int = 4096
    camera_height_m: float = 1.6
    hfov_deg: float | None = None
    max_distance_m: float = 60.0
    min_columns: int = 5
    replace_height: bool = False
    overwrite: bool = False


@dataclass
class PhotoProblem:
    """A photo left out of a stage, with a one-line reason (``stage``: read, parse, pose, geometry)."""

    path: Path
    reason: str
    stage: str


@dataclass
class StreetResult:
    """What a street job wrote and measured."""

    output: Path
    photos: int
    parsed: int
    measured: int
    buildings_measured: int
    observations: pd.DataFrame
    problems: list[PhotoProblem] = field(default_factory=list)

    @property
    def skipped(self) -> list[PhotoProblem]:
        return self.problems


def discover_photos(paths: Sequence[Path]) -> list[Path]:
    """JPEG/PNG files as given, and those in folders (recursive); sorted, de-duplicated."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES]
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder; check the photo paths")
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: str(p))
    if not unique:
        raise InputError(f"no photos (.jpg, .jpeg, .png) found in {', '.join(str(p) for p in paths)}")
    return unique


def read_buildings(path: Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """Footprints with a ``building_id`` (an existing unique ``building_id`` column, else the feature id)."""
    gdf = read_footprints(path, layer, option="--footprints-layer", several="first", fid_as_index=True)
    if "building_id" in gdf.columns:
        ids = pd.to_numeric(gdf["building_id"], errors="coerce")
        if ids.isna().any() or ids.duplicated().any():
            raise InputError(
                f"{Path(path).name}: building_id is not a unique integer per footprint; fix or drop it"
            )
        gdf["building_id"] = ids.astype(np.int64)
    else:
        gdf["building_id"] = np.asarray(gdf.index, dtype=np.int64)
    return gdf.reset_index(drop=True)


def _label_path(folder: Path, photo: Path) -> Path | None:
    for name in (f"{photo.stem}.png", f"{photo.stem}.labels.png", f"{photo.stem}_labels.png"):
        if (folder / name).exists():
            return folder / name
    return None


@dataclass
class _Labeller:
    """Where the photos' class labels come from: the facade model, or a folder of label masks."""

    parser: FacadeParser | None
    folder: Path | None
    classes: tuple[str, ...]
    roles: ClassRoles
    palette: Palette | None
    card: dict[str, Any]

    @classmethod
    def from_config(cls, config: StreetConfig) -> _Labeller:
        """The model of ``config.model``, or ``config.labels``; ``InputError`` / ``ModelError`` when unusable."""
        if config.labels is not None:
            if not Path(config.labels).is_dir():
                raise InputError(f"{config.labels}: not a folder; --labels takes a folder of label PNGs")
            classes = tuple(config.label_classes or LABELMEFACADE_CLASSES)
            return cls(None, Path(config.labels), classes, ClassRoles.from_names(classes), _palette(classes), {})
        parser = FacadeParser(config.model, config.device, config.batch_size, config.tta)
        try:
            roles = ClassRoles.from_names(parser.classes)
        except InputError as exc:
            raise ModelError(f"{parser.card.name}: {exc}") from exc
        return cls(parser, None, parser.classes, roles, _palette(parser.classes), parser.card.to_dict())

    def label(self, path: Path, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Class ids of the photo ``path`` (``rgb`` at ``size``); ``InputError`` when there are none."""
        if self.parser is not None:
            return self.parser.parse(rgb)
        label_file = _label_path(self.folder, path)
        if label_file is None:
            raise InputError(f"{path.name}: no label mask {path.stem}.png in {self.folder}; add it")
        return load_labels(label_file, size, self.classes, self.palette)


def _palette(classes: Sequence[str]) -> Palette | None:
    return LABELMEFACADE_PALETTE if tuple(classes) == tuple(LABELMEFACADE_CLASSES) else None


#: A photo's pose (``None`` when unusable), the reasons it is unusable, and the photo's size.
_PoseEntry = tuple[CameraPose | None, list[str], tuple[int, int]]


@dataclass
class _Scene:
    """The scene's metric frame: its UTM zone, each posed camera's grid factors, and the nearby footprints."""

    epsg: int
    positions: dict[Path, tuple[float, float, float, float]]
    footprints: Footprints

    @classmethod
    def build(cls, buildings: gpd.GeoDataFrame, poses: dict[Path, _PoseEntry], reach_m: float) -> _Scene:
        """The UTM zone of the cameras (of the footprints without any), footprints within ``reach_m`` of one."""
        posed = [p for p, _, _ in poses.values() if p is not None]
        if posed:
            epsg = int(utm_epsg(np.median([p.lon for p in posed]), np.median([p.lat for p in posed]))[0])
        else:
            centre = buildings.geometry.to_crs(WGS84).union_all().centroid
            epsg = int(utm_epsg(centre.x, centre.y)[0])
        metric = buildings.geometry.to_crs(epsg=epsg)
        to_grid = Transformer.from_crs(WGS84, CRS.from_epsg(epsg), always_xy=True)
        positions = {p: grid_factors(to_grid, v[0].lon, v[0].lat) for p, v in poses.items() if v[0] is not None}
        keep = np.zeros(0, int)
        if positions:
            reach = shapely.MultiPoint([(v[0], v[1]) for v in positions.values()]).buffer(reach_m * 1.01)
            keep = metric.sindex.query(reach, predicate="intersects")
        keep = np.sort(keep)
        ids = buildings["building_id"].iloc[keep]
        return cls(epsg, positions, Footprints.from_geometries(metric.iloc[keep].to_numpy(), ids))


@dataclass
class _Tally:
    """What the photo loop found: view rows, observation rows, problems and counts."""

    problems: list[PhotoProblem]
    views: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    parsed: int = 0
    measured: int = 0

    def skip(self, view: dict[str, Any], path: Path, reason: str, stage: str) -> None:
        """Leave ``path`` out of ``stage`` with ``reason`` (listed in ``errors``, noted on its view row)."""
        self.problems.append(PhotoProblem(path, reason, stage))
        view["problem"] = reason


def run_street(config: StreetConfig, progress: ProgressFn | None = None) -> StreetResult:
    """Parse every photo, measure the posed ones against the footprints, and write ``config.output``.

    Layers: ``buildings`` (the footprints with the street columns joined, see ``join_street``),
    ``street_views`` (one point per photo; photos without a usable pose have no geometry); tables
    ``facade_observations``, ``errors`` (photos not parsed or not measured, and why) and ``street_runs``.
    Raises ``InputError`` / ``ModelError`` / ``OutputExistsError`` before any work when the inputs, the model
    or the output cannot be used.
    """
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    output = Path(config.output)
    require_gpkg(output, "street.gpkg")
    refuse_existing(output, config.overwrite, label=output.name, file=True)
    photos = discover_photos(config.photos)
    buildings = read_buildings(config.footprints, config.footprints_layer)
    table = read_pose_table(config.cameras) if config.cameras else {}
    labeller = _Labeller.from_config(config)
    tally = _Tally(problems=[])
    poses = _read_poses(photos, table, config, tally)
    scene = _Scene.build(buildings, poses, config.max_distance_m)
    for done, path in enumerate(photos, start=1):
        if path in poses:
            _measure_photo(path, poses[path], labeller, scene, config, tally)
        report_progress(progress, "photos", done, len(photos))
    observations = pd.DataFrame.from_records(tally.records, columns=OBSERVATION_COLUMNS)
    aggregates = aggregate_observations(observations)
    joined = join_street(buildings, aggregates, replace_height=config.replace_height)
    runs = _runs_table(config, labeller, tally, len(photos), len(observations), scene.epsg, started, clock)
    write_gpkg(
        output,
        {"buildings": joined, "street_views": _views_frame(tally.views, buildings.crs)},
        {
            "facade_observations": observations,
            "errors": errors_table((p.path, p.reason, p.stage, "") for p in tally.problems),
            "street_runs": runs,
        },
        overwrite=config.overwrite,
    )
    return StreetResult(
        output=output,
        photos=len(photos),
        parsed=tally.parsed,
        measured=tally.measured,
        buildings_measured=int(observations["building_id"].nunique()) if len(observations) else 0,
        observations=observations,
        problems=tally.problems,
    )


def _read_poses(
    photos: Sequence[Path], table: Mapping[str, PoseFields], config: StreetConfig, tally: _Tally
) -> dict[Path, _PoseEntry]:
    """Each readable photo's pose (cheap: EXIF and the table only); unreadable photos are left out."""
    poses: dict[Path, _PoseEntry] = {}
    for path in photos:
        try:
            exif, size = exif_pose(path)
        except InputError as exc:
            tally.problems.append(PhotoProblem(path, str(exc), "read"))
            continue
        row = lookup_pose(table, path) if table else None
        pose, reasons = resolve_pose(path, size, row, exif, config.camera_height_m, config.hfov_deg)
        poses[path] = (pose, reasons, size)
    return poses


def _measure_photo(
    path: Path, entry: _PoseEntry, labeller: _Labeller, scene: _Scene, config: StreetConfig, tally: _Tally
) -> None:
    """Parse one photo and, when it is posed and placed sensibly, measure the footprints it shows."""
    pose, reasons, size = entry
    view = _view_row(path, pose, size)
    tally.views.append(view)
    pano = pose.camera.projection == "equirectangular" if pose else abs(size[0] - 2 * size[1]) <= 2
    work = working_size(*size, config.pano_max_side if pano else config.max_side)
    try:
        rgb = resize_rgb(load_image(path), work)
        labels = labeller.label(path, rgb, work)
    except InputError as exc:
        tally.skip(view, path, str(exc), "parse")
        return
    tally.parsed += 1
    view.update(_class_shares(labels, labeller.roles))
    if config.save_labels is not None:
        save_labels(Path(config.save_labels) / f"{path.stem}.png", labels, labeller.palette)
    if pose is None:
        tally.skip(view, path, f"{path.name}: {'; '.join(reasons)} (parsed, not measured)", "pose")
        return
    x, y, scale, convergence = scene.positions[path]
    misplaced = _placement_problem(path, scene.footprints, x, y, config.max_distance_m * scale, config)
    if misplaced:
        tally.skip(view, path, misplaced, "geometry")
        return
    camera = replace(pose.camera, heading_deg=(pose.camera.heading_deg + convergence) % 360.0).resized(*work)
    observations = measure_photo(
        labels,
        labeller.roles,
        camera,
        x,
        y,
        pose.camera_height_m,
        scene.footprints,
        rgb=rgb,
        max_distance_m=config.max_distance_m,
        min_columns=config.min_columns,
        scale_factor=scale,
    )
    tally.measured += 1
    view["measured"] = True
    view["buildings_measured"] = len(observations)
    for obs in observations:
        row = obs.to_dict()
        row["building_id"] = int(scene.footprints.ids[row.pop("building")])
        row["photo"] = str(path)
        row["bearing_deg"] = (row["bearing_deg"] - convergence) % 360.0
        tally.records.append(row)


def _placement_problem(
    path: Path, footprints: Footprints, x: float, y: float, reach: float, config: StreetConfig
) -> str | None:
    """Why a camera at grid (x, y) cannot be measured (inside a footprint, none within ``reach``), or None."""
    inside = footprints.containing(x, y)
    if inside >= 0:
        return (
            f"{path.name}: the camera stands inside footprint building_id {int(footprints.ids[inside])}; "
            "check its position (parsed, not measured)"
        )
    if len(footprints.near(x, y, reach)) == 0:
        return (
            f"{path.name}: no footprint within {config.max_distance_m:g} m of the camera; "
            "check its position or --max-distance (parsed, not measured)"
        )
    return None


def _runs_table(
    config: StreetConfig,
    labeller: _Labeller,
    tally: _Tally,
    photos: int,
    observations: int,
    epsg: int,
    started: datetime,
    clock: float,
) -> pd.DataFrame:
    """The one-row ``street_runs`` table: when, with which model and options, and what was measured."""
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "photos"}
    row = {
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bldgseg_version": __version__,
        "model": labeller.card.get("name", "labels"),
        "model_card": json.dumps(labeller.card),
        "classes": json.dumps(list(labeller.classes)),
        "parameters": json.dumps(params, default=str),
        "metric_crs": f"EPSG:{epsg}",
        "photos": photos,
        "photos_parsed": tally.parsed,
        "photos_measured": tally.measured,
        "observations": observations,
        "seconds_total": round(time.perf_counter() - clock, 2),
    }
    return pd.DataFrame([row])


def _view_row(path: Path, pose: CameraPose | None, size: tuple[int, int]) -> dict[str, Any]:
    camera = pose.camera if pose else None
    return {
        "photo": str(path),
        "lon": pose.lon if pose else math.nan,
        "lat": pose.lat if pose else math.nan,
        "projection": camera.projection if camera else "",
        "heading_deg": camera.heading_deg if camera else math.nan,
        "pitch_deg": camera.pitch_deg if camera else math.nan,
        "roll_deg": camera.roll_deg if camera else math.nan,
        "hfov_deg": camera.hfov_deg if camera else math.nan,
        "camera_height_m": pose.camera_height_m if pose else math.nan,
        "pose_source": pose.source if pose else "",
        "pose_notes": "; ".join(pose.notes) if pose else "",
        "width_px": size[0],
        "height_px": size[1],
        "facade_share": math.nan,
        "window_share": math.nan,
        "sky_share": math.nan,
        "measured": False,
        "buildings_measured": 0,
        "problem": "",
    }


def _class_shares(labels: np.ndarray, roles: ClassRoles) -> dict[str, float]:
    total = max(labels.size, 1)
    return {
        "facade_share": float(np.isin(labels, roles.facade).sum() / total),
        "window_share": float(np.isin(labels, roles.window).sum() / total),
        "sky_share": float(np.isin(labels, roles.top).sum() / total),
    }


def _views_frame(views: list[dict[str, Any]], crs: Any) -> gpd.GeoDataFrame:
    frame = pd.DataFrame.from_records(views, columns=list(_view_row(Path("x"), None, (0, 0))))
    points = [
        shapely.Point(lon, lat) if math.isfinite(lon) and math.isfinite(lat) else None
        for lon, lat in zip(frame["lon"], frame["lat"], strict=True)
    ]
    geometry = gpd.GeoSeries(points, crs=WGS84).to_crs(crs)
    gdf = gpd.GeoDataFrame(frame, geometry=geometry, crs=crs)
    gdf["measured"] = gdf["measured"].astype(bool)
    gdf.attrs["geometry_type"] = "Point"
    return gdf
