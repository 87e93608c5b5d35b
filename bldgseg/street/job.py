"""``bldgseg street``: photos + poses + footprints -> facade observations and per-building street attributes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS, Geod, Transformer

from bldgseg import __version__
from bldgseg.attributes import utm_epsg
from bldgseg.errors import InputError, ModelError, OutputExistsError
from bldgseg.export import write_gpkg
from bldgseg.street.aggregate import OBSERVATION_COLUMNS, aggregate_observations, join_street
from bldgseg.street.cameras import (
    CameraPose,
    exif_pose,
    load_image,
    lookup_pose,
    read_pose_table,
    resolve_pose,
)
from bldgseg.street.geometry import ClassRoles, Footprints, measure_photo
from bldgseg.street.parsing import (
    DEFAULT_FACADE_MODEL,
    FacadeParser,
    load_labels,
    resize_rgb,
    save_labels,
    working_size,
)

__all__ = ["PHOTO_SUFFIXES", "StreetConfig", "StreetResult", "PhotoProblem", "discover_photos", "run_street"]

ProgressFn = Callable[[str, int, int], None]
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
ERROR_COLUMNS = ["path", "reason", "stage", "unit"]
_WGS84 = CRS.from_epsg(4326)
_GEOD = Geod(ellps="WGS84")


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
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path.name}: footprint file not found; check --footprints")
    try:
        if layer is None:
            names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
            layer = "buildings" if "buildings" in names else None
        gdf = pyogrio.read_dataframe(path, layer=layer, fid_as_index=True)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(
            f"{path.name}: cannot read footprints ({exc}); check the path and --footprints-layer"
        ) from exc
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.crs is None:
        raise InputError(f"{path.name}: footprints have no CRS; set one with ogr2ogr -a_srs EPSG:<code>")
    gdf = gdf[gdf.geometry.notna() & gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    if gdf.empty:
        raise InputError(
            f"{path.name}: no polygon footprints found; give a polygon layer (--footprints-layer)"
        )
    if "building_id" in gdf.columns:
        ids = pd.to_numeric(gdf["building_id"], errors="coerce")
        if ids.isna().any() or ids.duplicated().any():
            raise InputError(
                f"{path.name}: building_id is not a unique integer per footprint; fix or drop it"
            )
        gdf["building_id"] = ids.astype(np.int64)
    else:
        gdf["building_id"] = np.asarray(gdf.index, dtype=np.int64)
    return gdf.reset_index(drop=True)


def _grid_factors(to_grid: Transformer, lon: float, lat: float) -> tuple[float, float, float, float]:
    """Grid position, scale factor and grid bearing of true north (degrees) at lon/lat."""
    x, y = to_grid.transform(lon, lat)
    dlat = 1e-5 if lat < 89.0 else -1e-5
    x2, y2 = to_grid.transform(lon, lat + dlat)
    _, _, metres = _GEOD.inv(lon, lat, lon, lat + dlat)
    convergence = math.degrees(math.atan2(x2 - x, y2 - y)) + (180.0 if dlat < 0 else 0.0)
    return float(x), float(y), math.hypot(x2 - x, y2 - y) / metres, convergence


def _refuse_existing(output: Path, overwrite: bool) -> None:
    if output.suffix.lower() != ".gpkg":
        raise InputError(f"{output}: the output must be a GeoPackage (.gpkg); use e.g. -o street.gpkg")
    if output.is_dir():
        raise OutputExistsError(f"{output.name}: is a folder; choose a file name with -o")
    if output.exists() and not overwrite:
        raise OutputExistsError(
            f"{output.name}: already exists; pass --overwrite to replace it or choose another -o"
        )


def _label_path(folder: Path, photo: Path) -> Path | None:
    for name in (f"{photo.stem}.png", f"{photo.stem}.labels.png", f"{photo.stem}_labels.png"):
        if (folder / name).exists():
            return folder / name
    return None


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
    _refuse_existing(output, config.overwrite)
    photos = discover_photos(config.photos)
    buildings = read_buildings(config.footprints, config.footprints_layer)
    table = read_pose_table(config.cameras) if config.cameras else {}
    from bldgseg.train.datasets import LABELMEFACADE_CLASSES, LABELMEFACADE_PALETTE

    parser: FacadeParser | None = None
    card_info: dict[str, Any] = {}
    if config.labels is not None:
        if not Path(config.labels).is_dir():
            raise InputError(f"{config.labels}: not a folder; --labels takes a folder of label PNGs")
        classes = tuple(config.label_classes or LABELMEFACADE_CLASSES)
        roles = ClassRoles.from_names(classes)
    else:
        parser = FacadeParser(config.model, config.device, config.batch_size, config.tta)
        classes = parser.classes
        card_info = parser.card.to_dict()
        try:
            roles = ClassRoles.from_names(classes)
        except InputError as exc:
            raise ModelError(f"{parser.card.name}: {exc}") from exc
    palette = LABELMEFACADE_PALETTE if tuple(classes) == tuple(LABELMEFACADE_CLASSES) else None

    problems: list[PhotoProblem] = []
    views: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    # first pass: poses (cheap) to fix the scene's metric CRS
    poses: dict[Path, tuple[CameraPose | None, list[str], tuple[int, int]]] = {}
    for path in photos:
        try:
            exif, size = exif_pose(path)
        except InputError as exc:
            problems.append(PhotoProblem(path, str(exc), "read"))
            continue
        row = lookup_pose(table, path) if table else None
        pose, reasons = resolve_pose(path, size, row, exif, config.camera_height_m, config.hfov_deg)
        poses[path] = (pose, reasons, size)
    posed = [p for p, _, _ in poses.values() if p is not None]
    if posed:
        epsg = int(utm_epsg(np.median([p.lon for p in posed]), np.median([p.lat for p in posed]))[0])
    else:
        centre = buildings.geometry.to_crs(_WGS84).union_all().centroid
        epsg = int(utm_epsg(centre.x, centre.y)[0])
    metric = buildings.geometry.to_crs(epsg=epsg)
    to_grid = Transformer.from_crs(_WGS84, CRS.from_epsg(epsg), always_xy=True)
    positions = {p: _grid_factors(to_grid, v[0].lon, v[0].lat) for p, v in poses.items() if v[0] is not None}
    if positions:
        reach = shapely.MultiPoint([(v[0], v[1]) for v in positions.values()]).buffer(
            config.max_distance_m * 1.01
        )
        keep = metric.sindex.query(reach, predicate="intersects")
    else:
        keep = np.zeros(0, int)
    keep = np.sort(keep)
    footprints = Footprints.from_geometries(metric.iloc[keep].to_numpy(), buildings["building_id"].iloc[keep])

    parsed = measured = 0
    for done, path in enumerate(photos, start=1):
        if path not in poses:
            _progress(progress, done, len(photos))
            continue
        pose, reasons, size = poses[path]
        view = _view_row(path, pose, size)
        views.append(view)
        pano = pose.camera.projection == "equirectangular" if pose else abs(size[0] - 2 * size[1]) <= 2
        work = working_size(*size, config.pano_max_side if pano else config.max_side)
        try:
            rgb = resize_rgb(load_image(path), work)
            if parser is not None:
                labels = parser.parse(rgb)
            else:
                label_file = _label_path(Path(config.labels), path)
                if label_file is None:
                    raise InputError(f"{path.name}: no label mask {path.stem}.png in {config.labels}; add it")
                labels = load_labels(label_file, work, classes, palette)
        except InputError as exc:
            problems.append(PhotoProblem(path, str(exc), "parse"))
            view["problem"] = str(exc)
            _progress(progress, done, len(photos))
            continue
        parsed += 1
        view.update(_class_shares(labels, roles))
        if config.save_labels is not None:
            save_labels(Path(config.save_labels) / f"{path.stem}.png", labels, palette)
        if pose is None:
            reason = f"{path.name}: {'; '.join(reasons)} (parsed, not measured)"
            problems.append(PhotoProblem(path, reason, "pose"))
            view["problem"] = reason
            _progress(progress, done, len(photos))
            continue
        x, y, scale, convergence = positions[path]
        inside = footprints.containing(x, y)
        if inside >= 0:
            reason = (
                f"{path.name}: the camera stands inside footprint building_id {int(footprints.ids[inside])}; "
                "check its position (parsed, not measured)"
            )
            problems.append(PhotoProblem(path, reason, "geometry"))
            view["problem"] = reason
            _progress(progress, done, len(photos))
            continue
        if len(footprints.near(x, y, config.max_distance_m * scale)) == 0:
            reason = (
                f"{path.name}: no footprint within {config.max_distance_m:g} m of the camera; "
                "check its position or --max-distance (parsed, not measured)"
            )
            problems.append(PhotoProblem(path, reason, "geometry"))
            view["problem"] = reason
            _progress(progress, done, len(photos))
            continue
        camera = replace(pose.camera, heading_deg=(pose.camera.heading_deg + convergence) % 360.0)
        camera = camera.resized(*work)
        observations = measure_photo(
            labels,
            roles,
            camera,
            x,
            y,
            pose.camera_height_m,
            footprints,
            rgb=rgb,
            max_distance_m=config.max_distance_m,
            min_columns=config.min_columns,
            scale_factor=scale,
        )
        measured += 1
        view["measured"] = True
        view["buildings_measured"] = len(observations)
        for obs in observations:
            row = obs.to_dict()
            row["building_id"] = int(footprints.ids[row.pop("building")])
            row["photo"] = str(path)
            row["bearing_deg"] = (row["bearing_deg"] - convergence) % 360.0
            records.append(row)
        _progress(progress, done, len(photos))

    observations = pd.DataFrame.from_records(records, columns=OBSERVATION_COLUMNS)
    aggregates = aggregate_observations(observations)
    joined = join_street(buildings, aggregates, replace_height=config.replace_height)
    views_gdf = _views_frame(views, buildings.crs)
    errors = pd.DataFrame(
        {
            "path": [str(p.path) for p in problems],
            "reason": [p.reason for p in problems],
            "stage": [p.stage for p in problems],
            "unit": [""] * len(problems),
        },
        columns=ERROR_COLUMNS,
        dtype="string",
    )
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "photos"}
    runs = pd.DataFrame(
        [
            {
                "started_utc": started.isoformat(timespec="seconds"),
                "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "bldgseg_version": __version__,
                "model": card_info.get("name", "labels"),
                "model_card": json.dumps(card_info),
                "classes": json.dumps(list(classes)),
                "parameters": json.dumps(params, default=str),
                "metric_crs": f"EPSG:{epsg}",
                "photos": len(photos),
                "photos_parsed": parsed,
                "photos_measured": measured,
                "observations": len(observations),
                "seconds_total": round(time.perf_counter() - clock, 2),
            }
        ]
    )
    write_gpkg(
        output,
        {"buildings": joined, "street_views": views_gdf},
        {"facade_observations": observations, "errors": errors, "street_runs": runs},
        overwrite=config.overwrite,
    )
    return StreetResult(
        output=output,
        photos=len(photos),
        parsed=parsed,
        measured=measured,
        buildings_measured=int(observations["building_id"].nunique()) if len(observations) else 0,
        observations=observations,
        problems=problems,
    )


def _progress(progress: ProgressFn | None, done: int, total: int) -> None:
    if progress:
        progress("photos", done, total)


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
    geometry = gpd.GeoSeries(points, crs=_WGS84).to_crs(crs)
    gdf = gpd.GeoDataFrame(frame, geometry=geometry, crs=crs)
    gdf["measured"] = gdf["measured"].astype(bool)
    gdf.attrs["geometry_type"] = "Point"
    return gdf
