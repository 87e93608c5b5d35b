"""Accuracy of building predictions against ground truth: pixel metrics, polygon matching, attribute errors.

Rules (also written into every report's ``settings["definitions"]``):

- **Polygon IoU** = area(P ∩ T) / area(P ∪ T), computed in one planar CRS: the truth's CRS when it is projected
  (a ratio of areas is unchanged by a projection's local scale), else the UTM zone of the data's centre.
- **Matching** (SpaceNet): candidate pairs are the intersecting (prediction, truth) pairs found with an
  STRtree; pairs with IoU >= the threshold (0.5 by default; a 1e-9 tolerance makes an IoU of exactly 0.5
  count) are accepted greedily by descending IoU (ties: lower prediction row, then lower truth row), each
  polygon in at most one pair. Unmatched predictions are false positives, unmatched truths false negatives.
  Precision = TP / predictions, recall = TP / truths, F1 = 2 TP / (predictions + truths).
- **Merged**: a prediction that holds more than half of the area of each of two or more truths.
- **Split**: a truth that holds more than half of the area of each of two or more predictions.
- **Count error** = predictions - truths; relative = that / truths.
- **Attribute errors** on matched pairs: relative error (pred - truth) / truth of ``area_m2`` and ``width_m``
  (short side of the minimum rotated rectangle), both measured by ``bldgseg.attributes.shape_attributes``.
- **Per image**: pixel metrics on the image's grid (predictions and truth rasterized with the pixel-centre
  rule), pixels outside the image's valid mask excluded. Polygon metrics with ``edge_rule="clip"`` (default):
  truth and predictions clipped to the image extent, pieces of zero area dropped (a building cut by the image
  edge is compared with the part of it the image shows, as in SpaceNet); with ``edge_rule="point"``: whole
  polygons whose representative point lies inside the image (half-open pixel extent, so adjacent tiles never
  share one). Overall metrics are computed from the counts summed over images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.errors import RasterioError
from rasterio.features import rasterize
from rasterio.warp import transform_bounds
from shapely.geometry import Polygon, box

from bldgseg.attributes import shape_attributes, utm_epsg
from bldgseg.enrich import read_mask_file
from bldgseg.errors import InputError
from bldgseg.evaluation_report import EvaluationReport, ImageView
from bldgseg.io import RasterInfo, discover_inputs, open_raster_info
from bldgseg.vectorize import mask_to_polygons

__all__ = [
    "DEFINITIONS",
    "EvaluationReport",
    "Matching",
    "attribute_errors",
    "evaluate",
    "match_polygons",
    "pixel_metrics",
    "summarize_attribute_errors",
]

PathLike = str | os.PathLike[str]
ProgressFn = Callable[[str, int, int], None]

#: Footprint files looked for in a folder that holds no raster.
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite", ".parquet")

#: Slack on the IoU threshold, so that an IoU of exactly 0.5 computed in floating point still matches.
IOU_TOLERANCE = 1e-9
#: Share of a polygon's area that must lie inside another for the merged/split counts (strictly more).
MAJORITY = 0.5
DEFINITIONS = [
    "pixel metrics: TP/FP/FN over the valid pixels of each image grid (pixel-centre rasterization); "
    "IoU = TP/(TP+FP+FN), precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN)",
    "polygon matching (SpaceNet): IoU >= threshold (1e-9 tolerance, so exactly 0.5 matches), greedy by "
    "descending IoU, one-to-one; unmatched predictions are false positives, unmatched truths false negatives",
    "polygon precision = TP/predictions, recall = TP/truths, F1 = 2TP/(predictions+truths)",
    "merged: a prediction holding more than half of the area of each of two or more truths",
    "split: a truth holding more than half of the area of each of two or more predictions",
    "count error = predictions - truths; relative count error = count error / truths",
    "attribute errors on matched pairs: relative error (pred - truth)/truth of area_m2 and width_m "
    "(short side of the minimum rotated rectangle), measured in each building's UTM zone",
    "per image: truth reprojected to the image's CRS; overall = metrics of the counts summed over images",
    "undefined ratios (no prediction, no truth) are n/a (null in JSON)",
]
EDGE_RULES = {
    "clip": "polygon metrics per image: truth and predictions clipped to the image extent (pieces of zero "
    "area dropped), so a building cut by the image edge is compared with the part the image shows",
    "point": "polygon metrics per image: whole polygons whose representative point lies inside the image",
}
_ATTRS = (("area_m2", "area"), ("width_m", "width"))
_ERROR_COLUMNS = [
    "pred",
    "truth",
    "iou",
    "area_m2_pred",
    "area_m2_truth",
    "area_rel_error",
    "width_m_pred",
    "width_m_truth",
    "width_rel_error",
]


# -------------------- pixel metrics


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def _pixel_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def pixel_metrics(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict[str, Any]:
    """Pixel counts ``tp, fp, fn, tn`` and ``iou, precision, recall, f1`` of two boolean masks.

    Only pixels where ``valid`` is True count (all pixels without it). Undefined ratios are ``None``.
    """
    p = np.asarray(pred).astype(bool)
    t = np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise InputError(
            f"pixel metrics: prediction shape {p.shape} differs from truth shape {t.shape}; "
            "rasterize both on the same grid"
        )
    v = np.ones(p.shape, dtype=bool) if valid is None else np.asarray(valid).astype(bool)
    if v.shape != p.shape:
        raise InputError(
            f"pixel metrics: valid mask shape {v.shape} differs from {p.shape}; pass matching arrays"
        )
    tp = int(np.count_nonzero(p & t & v))
    fp = int(np.count_nonzero(p & ~t & v))
    fn = int(np.count_nonzero(~p & t & v))
    tn = int(np.count_nonzero(~p & ~t & v))
    return _pixel_from_counts(tp, fp, fn, tn)


# -------------------- polygon matching


def _polygon_from_counts(
    n_pred: int, n_truth: int, tp: int, merged: int, split: int, iou_sum: float
) -> dict[str, Any]:
    return {
        "n_pred": int(n_pred),
        "n_truth": int(n_truth),
        "tp": int(tp),
        "fp": int(n_pred - tp),
        "fn": int(n_truth - tp),
        "precision": _ratio(tp, n_pred),
        "recall": _ratio(tp, n_truth),
        "f1": _ratio(2 * tp, n_pred + n_truth),
        "mean_iou": _ratio(iou_sum, tp),
        "merged": int(merged),
        "split": int(split),
        "count_error": int(n_pred - n_truth),
        "count_error_relative": _ratio(n_pred - n_truth, n_truth),
    }


@dataclass
class Matching:
    """One-to-one matching of predictions to truths (see the module docstring for the rules).

    ``matches`` has columns ``pred``, ``truth`` (index labels of the inputs) and ``iou``, by descending IoU.
    ``false_positives``/``false_negatives`` are the unmatched prediction/truth labels; ``merged`` the labels
    of merged predictions, ``split`` those of split truths. Rows with an empty or missing geometry are
    ignored (not counted in ``n_pred``/``n_truth``).
    """

    matches: pd.DataFrame
    false_positives: list[Any]
    false_negatives: list[Any]
    merged: list[Any]
    split: list[Any]
    n_pred: int
    n_truth: int
    iou_threshold: float = 0.5

    @property
    def tp(self) -> int:
        return len(self.matches)

    @property
    def fp(self) -> int:
        return len(self.false_positives)

    @property
    def fn(self) -> int:
        return len(self.false_negatives)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.n_pred)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.n_truth)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, self.n_pred + self.n_truth)

    @property
    def count_error(self) -> int:
        return self.n_pred - self.n_truth

    @property
    def count_error_relative(self) -> float | None:
        return _ratio(self.count_error, self.n_truth)

    def metrics(self) -> dict[str, Any]:
        """Counts and ratios as a dict (the ``polygon`` section of a report)."""
        iou_sum = float(self.matches["iou"].sum()) if self.tp else 0.0
        return _polygon_from_counts(
            self.n_pred, self.n_truth, self.tp, len(self.merged), len(self.split), iou_sum
        )


def _geoseries(frame: gpd.GeoDataFrame | gpd.GeoSeries) -> gpd.GeoSeries:
    return frame.geometry if isinstance(frame, gpd.GeoDataFrame) else frame


def _planar(
    pred: gpd.GeoDataFrame | gpd.GeoSeries, truth: gpd.GeoDataFrame | gpd.GeoSeries
) -> tuple[gpd.GeoSeries, gpd.GeoSeries]:
    """Both geometry series in one planar CRS: the truth's if projected, else the UTM zone of the centre."""
    pg, tg = _geoseries(pred), _geoseries(truth)
    if (pg.crs is None) != (tg.crs is None):
        raise InputError(
            "footprints: only one of predictions and truth has a CRS; set both with .set_crs() before matching"
        )
    if tg.crs is None:
        return pg, tg
    tcrs = CRS.from_user_input(tg.crs)
    if not CRS.from_user_input(pg.crs).equals(tcrs):
        pg = pg.to_crs(tcrs)
    if tcrs.is_projected:
        return pg, tg
    both = pd.concat([pg[~(pg.is_empty | pg.isna())], tg[~(tg.is_empty | tg.isna())]])
    if len(both) == 0:
        return pg, tg
    minx, miny, maxx, maxy = both.total_bounds
    lon, lat = Transformer.from_crs(tcrs, CRS.from_epsg(4326), always_xy=True).transform(
        (minx + maxx) / 2, (miny + maxy) / 2
    )
    epsg = int(utm_epsg(lon, lat)[0])
    return pg.to_crs(epsg), tg.to_crs(epsg)


def _usable(series: gpd.GeoSeries) -> tuple[list[Any], np.ndarray]:
    """Index labels and geometries (valid, non-empty) of the rows that have a geometry."""
    geoms = np.asarray(series.values, dtype=object)
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms = geoms[keep]
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms[bad] = shapely.make_valid(geoms[bad])
    return series.index[keep].tolist(), geoms


def _candidates(pg: np.ndarray, tg: np.ndarray) -> tuple[np.ndarray, ...]:
    """Intersecting pairs (pred pos, truth pos), their IoU and the shares of the truth/pred inside the other."""
    if len(pg) == 0 or len(tg) == 0:
        empty = np.array([], dtype=np.int64)
        return empty, empty, np.array([]), np.array([]), np.array([])
    pi, ti = shapely.STRtree(tg).query(pg, predicate="intersects")
    inter = shapely.area(shapely.intersection(pg[pi], tg[ti]))
    ap, at = shapely.area(pg)[pi], shapely.area(tg)[ti]
    union = ap + at - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
        share_t = np.where(at > 0, inter / at, 0.0)
        share_p = np.where(ap > 0, inter / ap, 0.0)
    return pi, ti, iou, share_t, share_p


def match_polygons(
    pred: gpd.GeoDataFrame | gpd.GeoSeries,
    truth: gpd.GeoDataFrame | gpd.GeoSeries,
    iou_threshold: float = 0.5,
) -> Matching:
    """Match predictions to truths one-to-one at IoU >= ``iou_threshold`` (greedy by descending IoU).

    Both need unique index labels and either both a CRS or neither; see the module docstring for the rules.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"iou_threshold: must be in (0, 1], got {iou_threshold}; pass e.g. 0.5")
    for frame, what in ((pred, "predictions"), (truth, "ground truth")):
        if not frame.index.is_unique:
            raise InputError(f"{what}: index labels are not unique; call .reset_index(drop=True) first")
    pg, tg = _planar(pred, truth)
    p_lab, p_geom = _usable(pg)
    t_lab, t_geom = _usable(tg)
    pi, ti, iou, share_t, share_p = _candidates(p_geom, t_geom)

    used_p = np.zeros(len(p_geom), dtype=bool)
    used_t = np.zeros(len(t_geom), dtype=bool)
    rows: list[tuple[Any, Any, float]] = []
    for k in np.lexsort((ti, pi, -iou)):
        if iou[k] < iou_threshold - IOU_TOLERANCE:
            break
        if used_p[pi[k]] or used_t[ti[k]]:
            continue
        used_p[pi[k]] = used_t[ti[k]] = True
        rows.append((p_lab[pi[k]], t_lab[ti[k]], float(iou[k])))
    matches = pd.DataFrame(rows, columns=["pred", "truth", "iou"])
    if matches.empty:
        matches = matches.astype({"iou": float})

    merged_n = np.bincount(pi[share_t > MAJORITY + IOU_TOLERANCE], minlength=len(p_geom))
    split_n = np.bincount(ti[share_p > MAJORITY + IOU_TOLERANCE], minlength=len(t_geom))
    return Matching(
        matches=matches,
        false_positives=[lab for lab, used in zip(p_lab, used_p, strict=True) if not used],
        false_negatives=[lab for lab, used in zip(t_lab, used_t, strict=True) if not used],
        merged=[lab for lab, n in zip(p_lab, merged_n, strict=True) if n >= 2],
        split=[lab for lab, n in zip(t_lab, split_n, strict=True) if n >= 2],
        n_pred=len(p_geom),
        n_truth=len(t_geom),
        iou_threshold=float(iou_threshold),
    )


# -------------------- attribute errors


def _empty_errors() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in _ERROR_COLUMNS})


def attribute_errors(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, matching: Matching) -> pd.DataFrame:
    """One row per matched pair: ``pred, truth, iou``, the predicted and true ``area_m2``/``width_m`` and
    ``area_rel_error``/``width_rel_error`` = (pred - truth) / truth (NaN where the true value is 0)."""
    m = matching.matches
    if m.empty:
        return _empty_errors()
    sp = shape_attributes(pred.loc[m["pred"].tolist()])
    st = shape_attributes(truth.loc[m["truth"].tolist()])
    out = pd.DataFrame(
        {"pred": m["pred"].to_numpy(), "truth": m["truth"].to_numpy(), "iou": m["iou"].to_numpy()}
    )
    for column, short in _ATTRS:
        p = sp[column].to_numpy(dtype=float)
        t = st[column].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(t > 0, (p - t) / t, np.nan)
        out[f"{column}_pred"] = p
        out[f"{column}_truth"] = t
        out[f"{short}_rel_error"] = rel
    return out[_ERROR_COLUMNS]


def summarize_attribute_errors(errors: pd.DataFrame) -> dict[str, Any]:
    """``pairs`` and, for area and width, the median relative error (bias), the median and the mean absolute
    relative error over the pairs where it is defined (``None`` when none is)."""
    out: dict[str, Any] = {"pairs": len(errors)}
    for _column, short in _ATTRS:
        rel = errors[f"{short}_rel_error"].to_numpy(dtype=float) if len(errors) else np.array([])
        rel = rel[np.isfinite(rel)]
        has = rel.size > 0
        out[f"{short}_rel_error_median"] = float(np.median(rel)) if has else None
        out[f"{short}_abs_rel_error_median"] = float(np.median(np.abs(rel))) if has else None
        out[f"{short}_abs_rel_error_mean"] = float(np.mean(np.abs(rel))) if has else None
    return out


# -------------------- inputs


@dataclass(frozen=True)
class _Grid:
    """A pixel grid the metrics are computed on."""

    crs: Any
    transform: Affine
    width: int
    height: int

    def extent(self) -> Polygon:
        corners = [(0, 0), (self.width, 0), (self.width, self.height), (0, self.height)]
        return Polygon([self.transform @ c for c in corners])

    def inside(self, points: gpd.GeoSeries) -> np.ndarray:
        """Points inside the half-open pixel extent (col in [0, width), row in [0, height))."""
        if len(points) == 0:
            return np.zeros(0, dtype=bool)
        geoms = np.asarray(points.values, dtype=object)
        cols, rows = ~self.transform @ (shapely.get_x(geoms), shapely.get_y(geoms))
        with np.errstate(invalid="ignore"):
            return (cols >= 0) & (cols < self.width) & (rows >= 0) & (rows < self.height)

    def rasterize(self, geoms: Iterable[Any]) -> np.ndarray:
        """Boolean mask of the pixels whose centre lies inside any of ``geoms``."""
        shapes = [(g, 1) for g in geoms if g is not None and not g.is_empty]
        if not shapes:
            return np.zeros((self.height, self.width), dtype=bool)
        out = rasterize(
            shapes, out_shape=(self.height, self.width), transform=self.transform, fill=0, dtype="uint8"
        )
        return out.astype(bool)


def _paths(value: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def _spatial_layers(path: Path) -> list[str]:
    """Names of the layers of ``path`` that have geometries; [] when it is not a vector dataset."""
    if path.is_dir():
        return []
    try:
        layers = pyogrio.list_layers(path)
    except pyogrio.errors.DataSourceError:
        return []
    return [str(name) for name, geometry_type in layers if geometry_type is not None]


def _pick_layer(path: Path, layer: str | None, option: str, strict: bool) -> str:
    layers = _spatial_layers(path)
    if layer is not None and layer in layers:
        return layer
    if layer is not None and strict:
        raise InputError(
            f"{path.name}: no layer {layer!r} (layers: {', '.join(layers)}); pass another {option}"
        )
    if len(layers) == 1:
        return layers[0]
    if "buildings" in layers:
        return "buildings"
    raise InputError(f"{path.name}: several layers ({', '.join(layers)}); choose one with {option}")


def _read_vector(path: Path, layer: str) -> gpd.GeoDataFrame:
    """Polygonal rows of ``layer`` with a fresh RangeIndex; the layer must have a CRS."""
    try:
        gdf = pyogrio.read_dataframe(path, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(
            f"{path.name}: cannot read layer {layer!r} ({exc}); check the file and layer"
        ) from exc
    if gdf.crs is None:
        raise InputError(f"{path.name}: layer {layer!r} has no CRS; set one with ogr2ogr -a_srs EPSG:<code>")
    keep = gdf.geometry.notna() & gdf.geom_type.isin(["Polygon", "MultiPolygon"])
    return gdf[keep].reset_index(drop=True)


def _sources(paths: list[Path], what: str) -> tuple[str, list[Path]]:
    """``("vector", footprint files)`` or ``("raster", rasters)``: files by content; folders searched for
    rasters (``*.tif*``, ``*.vrt`` ...) and, holding none, for footprint files (``*.gpkg``, ``*.geojson`` ...)."""
    vectors: list[Path] = []
    rasters: list[Path] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder; check the {what} path")
        if path.is_dir():
            found = discover_inputs(path)
            rasters += found
            if not found:
                vectors += [
                    p
                    for p in sorted(path.rglob("*"))
                    if p.is_file() and p.suffix.lower() in VECTOR_SUFFIXES and _spatial_layers(p)
                ]
        elif _spatial_layers(path):
            vectors.append(path)
        else:
            rasters.append(path)
    if vectors and rasters:
        raise InputError(f"{vectors[0].name}: the {what} mix footprint files and rasters; give one kind")
    if not vectors and not rasters:
        raise InputError(f"{paths[0]}: no {what} found (no rasters, no footprint files); check the path")
    return ("vector", vectors) if vectors else ("raster", sorted(set(rasters)))


def _read_vectors(
    files: list[Path], layer: str | None, option: str, strict: bool
) -> tuple[gpd.GeoDataFrame, str]:
    """Footprints of all files (layer picked per file) in their common CRS, else WGS84; and the layer names."""
    frames: list[gpd.GeoDataFrame] = []
    names: list[str] = []
    for path in files:
        name = _pick_layer(path, layer, option, strict)
        frames.append(_read_vector(path, name))
        names.append(name)
    crs = _common_crs([f.crs for f in frames])
    merged = pd.concat([f.to_crs(crs) for f in frames], ignore_index=True)
    return gpd.GeoDataFrame(merged, geometry=frames[0].geometry.name, crs=crs), ", ".join(sorted(set(names)))


def _common_crs(crss: Sequence[Any]) -> Any:
    """The CRS shared by all, else WGS84 (so footprints from far-apart files are never forced into one UTM zone)."""
    first = CRS.from_user_input(crss[0])
    return crss[0] if all(first.equals(CRS.from_user_input(c)) for c in crss[1:]) else CRS.from_epsg(4326)


def _near(frame: gpd.GeoDataFrame | gpd.GeoSeries, grid: _Grid) -> gpd.GeoDataFrame | gpd.GeoSeries:
    """The rows meeting the grid's extent, in the grid's CRS (selected before reprojecting, with the index)."""
    extent = grid.extent()
    same = CRS.from_user_input(frame.crs).equals(CRS.from_user_input(grid.crs))
    bounds = extent.bounds if same else transform_bounds(grid.crs, frame.crs, *extent.bounds, densify_pts=21)
    sub = frame.iloc[np.sort(frame.sindex.query(box(*bounds), predicate="intersects"))]
    if not same:
        sub = sub.to_crs(grid.crs)
    return sub[sub.intersects(extent).to_numpy()]


def _polygonal(geom: Any) -> Any:
    """``geom`` without the lines and points an intersection can leave (None when nothing polygonal remains)."""
    if geom is None or geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    polys = [p for g in parts for p in shapely.get_parts(g)]
    return shapely.MultiPolygon(polys) if polys else None


def _clip(frame: gpd.GeoDataFrame, grid: _Grid) -> gpd.GeoDataFrame:
    """Rows clipped to the grid's extent (rows already inside untouched); rows with no area inside dropped."""
    extent = grid.extent()
    geoms = np.asarray(frame.geometry.values, dtype=object)
    if len(geoms) == 0:
        return frame
    invalid = ~shapely.is_missing(geoms) & ~shapely.is_valid(geoms)
    if invalid.any():  # OSM outlines, or outlines after reprojection, can self-touch
        geoms[invalid] = [_polygonal(g) for g in shapely.make_valid(geoms[invalid])]
    inside = shapely.within(geoms, extent)
    cut = geoms.copy()
    todo = ~inside & ~shapely.is_missing(geoms)
    if todo.any():
        cut[todo] = [_polygonal(g) for g in shapely.intersection(geoms[todo], extent)]
    keep = np.array([g is not None and not g.is_empty and g.area > 0 for g in cut], dtype=bool)
    out = frame.copy()
    out[out.geometry.name] = gpd.GeoSeries(cut, index=frame.index, crs=frame.crs)
    return out[keep]


def _mask_valid(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read_masks(1) > 0


def _truth_from_masks(paths: list[Path], threshold: float) -> tuple[gpd.GeoDataFrame, gpd.GeoSeries]:
    """Truth polygons vectorized from mask rasters, and the rasters' extents (what the truth covers)."""
    frames: list[gpd.GeoDataFrame] = []
    extents: list[gpd.GeoSeries] = []
    for path in paths:
        mask, _prob, transform, crs = read_mask_file(path, threshold)
        frames.append(mask_to_polygons(mask, transform, crs)[["geometry"]])
        extents.append(gpd.GeoSeries([_Grid(crs, transform, mask.shape[1], mask.shape[0]).extent()], crs=crs))
    crs = _common_crs([f.crs for f in frames])
    truth = gpd.GeoDataFrame(pd.concat([f.to_crs(crs) for f in frames], ignore_index=True), crs=crs)
    coverage = gpd.GeoSeries(pd.concat([e.to_crs(crs) for e in extents], ignore_index=True), crs=crs)
    return truth, coverage


def _image_info(path: Path) -> RasterInfo:
    """Validated imagery; fewer than 3 bands are read as grey (band 1 three times)."""
    try:
        return open_raster_info(path)
    except InputError as first:
        try:
            return open_raster_info(path, bands=(1, 1, 1))
        except InputError:
            raise first from None


def _image_valid(info: RasterInfo) -> np.ndarray:
    """Pixels valid in the three image bands (nodata, alpha, internal masks; finite values for floats), as
    ``read_rgb`` defines them, read one band at a time."""
    valid = np.ones((info.height, info.width), dtype=bool)
    try:
        with rasterio.open(info.path) as ds:
            for band in sorted(set(info.bands)):
                valid &= ds.read_masks(band) > 0
                if np.dtype(ds.dtypes[band - 1]).kind == "f":
                    valid &= np.isfinite(ds.read(band))
    except RasterioError as exc:
        raise InputError(
            f"{info.path.name}: cannot be read ({exc}); check the file with gdalinfo -checksum"
        ) from exc
    return valid


def _same_crs(a: Any, b: Any) -> bool:
    return CRS.from_user_input(a).equals(CRS.from_user_input(b))


def _paired_image(mask: Path, images: Sequence[Path]) -> Path | None:
    """The image whose stem starts the mask's name (``a.tif`` for ``a.mask.tif``, ``a.probability.tif``)."""
    stem = Path(mask.name).stem.lower()
    best: Path | None = None
    for image in images:
        key = Path(image.name).stem.lower()
        hit = stem == key or any(stem.startswith(key + sep) for sep in "._-")
        if hit and (best is None or len(key) > len(Path(best.name).stem)):
            best = image
    return best


def _source_image(value: str, images: Sequence[Path]) -> Path | None:
    """The image a ``source_image`` value names: the same file, else the same file name, else the image whose
    stem starts the value's name (a mask ``a.mask.tif`` vectorized by ``bldgseg vectorize`` -> ``a.tif``)."""
    resolved = Path(value).resolve()
    for image in images:
        if image.resolve() == resolved:
            return image
    name = Path(value).name
    for image in images:
        if image.name == name:
            return image
    return _paired_image(Path(value), images)


@dataclass
class _Unit:
    """One evaluated image: its grid, valid pixels, predictions and what the overlay shows."""

    name: str
    path: Path
    grid: _Grid
    valid: np.ndarray
    pred: gpd.GeoDataFrame  # in the grid CRS
    pred_pixels: np.ndarray
    background: Path
    kind: str
    bands: tuple[int, int, int] | None


def _image_paths_from_key(pred: gpd.GeoDataFrame, pred_files: list[Path], key: str) -> list[Path]:
    """The images named in column ``key``: as written, or relative to a prediction file's folder."""
    values = sorted({v for v in pred[key].fillna("").astype(str) if v})
    found: list[Path] = []
    for value in values:
        path = Path(value)
        if not path.exists() and not path.is_absolute():
            path = next((f.parent / value for f in pred_files if (f.parent / value).exists()), path)
        if not path.exists():
            raise InputError(
                f"{pred_files[0].name}: source image {value!r} (column {key!r}) not found; "
                "pass the images with --images"
            )
        found.append(path.resolve())
    return sorted(set(found))


def _vector_units(
    pred: gpd.GeoDataFrame, pred_files: list[Path], images: list[Path] | None, key: str
) -> tuple[Iterable[_Unit], int, int]:
    """Units from a footprint file of predictions, the number of images and of predictions left unassigned."""
    has_key = key in pred.columns
    if images:
        paths = discover_inputs(images)
    elif has_key:
        paths = _image_paths_from_key(pred, pred_files, key)
    else:
        raise InputError(
            f"{pred_files[0].name}: no {key!r} column to find the images from; pass the images with --images"
        )
    if not paths:
        raise InputError(f"{pred_files[0].name}: no images to evaluate on; pass GeoTIFFs with --images")
    assigned = np.zeros(len(pred), dtype=bool)
    owner: list[np.ndarray] = []
    if has_key:
        values = pred[key].fillna("").astype(str).to_numpy()
        image_of = {v: _source_image(v, paths) for v in set(values) if v}
        for path in paths:
            sel = np.array([bool(v) and image_of[v] == path for v in values], dtype=bool)
            owner.append(sel)
            assigned |= sel

    def units() -> Iterable[_Unit]:
        for i, path in enumerate(paths):
            info = _image_info(path)
            grid = _Grid(info.crs, info.transform, info.width, info.height)
            if has_key:
                subset = pred[owner[i]]
                subset = subset if _same_crs(subset.crs, info.crs) else subset.to_crs(info.crs)
            else:
                subset = _near(pred, grid)
            yield _Unit(
                name=path.name,
                path=path,
                grid=grid,
                valid=_image_valid(info),
                pred=subset,
                pred_pixels=grid.rasterize(subset.geometry.values),
                background=path,
                kind="rgb",
                bands=info.bands,
            )

    unassigned = int((~assigned).sum()) if has_key else 0
    return units(), len(paths), unassigned


def _raster_units(paths: list[Path], images: list[Path] | None, threshold: float) -> Iterable[_Unit]:
    """Units from mask/probability rasters of predictions (each on its own grid)."""
    image_paths = discover_inputs(images) if images else []
    for path in paths:
        mask, _prob, transform, crs = read_mask_file(path, threshold)
        grid = _Grid(crs, transform, mask.shape[1], mask.shape[0])
        valid = _mask_valid(path)
        name, background, kind, bands = path.name, path, "mask", None
        image = _paired_image(path, image_paths)
        if image is not None:
            info = _image_info(image)
            if _same_crs(info.crs, crs):
                name, background, kind, bands = image.name, image, "rgb", info.bands
                if info.transform.almost_equals(transform) and (info.height, info.width) == mask.shape:
                    valid &= _image_valid(info)
        yield _Unit(
            name=name,
            path=path,
            grid=grid,
            valid=valid,
            pred=mask_to_polygons(mask, transform, crs),
            pred_pixels=mask,
            background=background,
            kind=kind,
            bands=bands,
        )


# -------------------- evaluation


def evaluate(
    pred_path: PathLike | Sequence[PathLike],
    gt_path: PathLike | Sequence[PathLike],
    images: Sequence[PathLike] | None = None,
    pred_layer: str = "buildings",
    gt_layer: str | None = None,
    per_image_key: str = "source_image",
    iou_threshold: float = 0.5,
    threshold: float = 0.5,
    edge_rule: str = "clip",
    progress: ProgressFn | None = None,
) -> EvaluationReport:
    """Score predictions against ground truth per image and overall.

    ``pred_path``: a footprint file (e.g. ``bldgseg run``'s GeoPackage, layer ``pred_layer``, the images named
    by the ``per_image_key`` column or given as ``images``) or mask/probability rasters (files or folders;
    each evaluated on its own grid, cut at ``threshold``; an image in ``images`` whose stem starts the mask's
    name is its background and, on the same grid, adds its valid mask). ``gt_path``: footprints in any OGR
    format (layer ``gt_layer``) or mask rasters (pixels outside them are not counted). Truth is reprojected to
    each image's CRS. Several files, or folders (rasters, else footprint files in them), are accepted for
    both. ``edge_rule`` decides which polygons count per image: ``"clip"`` or ``"point"`` (module docstring).
    """
    if edge_rule not in EDGE_RULES:
        raise InputError(f"edge_rule: {edge_rule!r} is unknown; use one of {', '.join(EDGE_RULES)}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold: must be in [0, 1], got {threshold}; pass e.g. 0.5")
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"iou_threshold: must be in (0, 1], got {iou_threshold}; pass e.g. 0.5")
    pred_paths, gt_paths = _paths(pred_path), _paths(gt_path)
    image_list = [Path(p) for p in images] if images else None
    settings: dict[str, Any] = {
        "predictions": ", ".join(str(p) for p in pred_paths),
        "ground_truth": ", ".join(str(p) for p in gt_paths),
        "iou_threshold": float(iou_threshold),
        "probability_threshold": float(threshold),
    }

    gt_kind, gt_files = _sources(gt_paths, "ground truth")
    coverage: gpd.GeoSeries | None = None
    if gt_kind == "vector":
        truth, settings["gt_layer"] = _read_vectors(gt_files, gt_layer, "--gt-layer", strict=True)
    else:
        truth, coverage = _truth_from_masks(gt_files, threshold)

    pred_kind, pred_files = _sources(pred_paths, "predictions")
    if pred_kind == "vector":
        strict = pred_layer != "buildings"
        pred, settings["pred_layer"] = _read_vectors(pred_files, pred_layer, "--pred-layer", strict)
        units, total, unassigned = _vector_units(pred, pred_files, image_list, per_image_key)
        settings["predictions_without_image"] = unassigned
    else:
        units, total = _raster_units(pred_files, image_list, threshold), len(pred_files)
    settings["images"] = total
    settings["edge_rule"] = edge_rule
    settings["definitions"] = [*DEFINITIONS, EDGE_RULES[edge_rule]]

    per_image: dict[str, dict[str, Any]] = {}
    views: list[ImageView] = []
    pixel_sum = np.zeros(4, dtype=np.int64)
    poly_sum = np.zeros(5, dtype=np.int64)  # n_pred, n_truth, tp, merged, split
    iou_sum = 0.0
    errors: list[pd.DataFrame] = []
    for done, unit in enumerate(units, start=1):
        grid = unit.grid
        near = _near(truth, grid)
        valid = unit.valid if coverage is None else unit.valid & grid.rasterize(_near(coverage, grid).values)
        pixel = pixel_metrics(unit.pred_pixels, grid.rasterize(near.geometry.values), valid)

        if edge_rule == "clip":
            truth_counted, pred_counted = _clip(near, grid), _clip(unit.pred, grid)
        else:
            truth_counted = near[grid.inside(near.geometry.representative_point())]
            pred_counted = unit.pred[grid.inside(unit.pred.geometry.representative_point())]
        matching = match_polygons(pred_counted, truth_counted, iou_threshold)
        pair_errors = attribute_errors(pred_counted, truth_counted, matching)

        name, k = unit.name, 2
        while name in per_image:
            name, k = f"{unit.name} ({k})", k + 1
        per_image[name] = {
            "path": str(unit.path),
            "crs": CRS.from_user_input(grid.crs).to_string(),
            "width": grid.width,
            "height": grid.height,
            "pixel": pixel,
            "polygon": matching.metrics(),
            "attributes": summarize_attribute_errors(pair_errors),
        }
        views.append(
            ImageView(
                name=name,
                background=unit.background,
                kind=unit.kind,
                truth=np.asarray(near.geometry.values, dtype=object),
                truth_thick=near.index.isin(matching.false_negatives),
                pred=np.asarray(unit.pred.geometry.values, dtype=object),
                pred_thick=unit.pred.index.isin(matching.false_positives),
                bands=unit.bands,
                split=near.index.isin(matching.split),
                merged=unit.pred.index.isin(matching.merged),
            )
        )
        pixel_sum += [pixel["tp"], pixel["fp"], pixel["fn"], pixel["tn"]]
        poly_sum += [
            matching.n_pred,
            matching.n_truth,
            matching.tp,
            len(matching.merged),
            len(matching.split),
        ]
        iou_sum += float(matching.matches["iou"].sum()) if matching.tp else 0.0
        errors.append(pair_errors)
        if progress:
            progress("images", done, total)

    filled = [e for e in errors if len(e)]
    all_errors = pd.concat(filled, ignore_index=True) if filled else _empty_errors()
    overall = {
        "images": len(per_image),
        "pixel": _pixel_from_counts(*(int(v) for v in pixel_sum)),
        "polygon": _polygon_from_counts(*(int(v) for v in poly_sum), iou_sum),
        "attributes": summarize_attribute_errors(all_errors),
    }
    return EvaluationReport(overall=overall, per_image=per_image, settings=settings, views=views)
