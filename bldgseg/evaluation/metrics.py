"""Accuracy metrics without I/O: pixel counts and ratios, one-to-one polygon matching, attribute errors.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from bldgseg.attributes import shape_attributes
from bldgseg.errors import InputError
from bldgseg.geo_metric import utm_epsg

__all__ = [
    "DEFINITIONS",
    "Matching",
    "attribute_errors",
    "empty_attribute_errors",
    "match_polygons",
    "pixel_from_counts",
    "pixel_metrics",
    "polygon_from_counts",
    "summarize_attribute_errors",
]

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


def pixel_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    """The ``pixel`` section of a report from its four counts (undefined ratios are ``None``)."""
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
    return pixel_from_counts(tp, fp, fn, tn)


# -------------------- polygon matching


def polygon_from_counts(
    n_pred: int, n_truth: int, tp: int, merged: int, split: int, iou_sum: float
) -> dict[str, Any]:
    """The ``polygon`` section of a report from its counts and the summed IoU of the matched pairs."""
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
        return polygon_from_counts(
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


def empty_attribute_errors() -> pd.DataFrame:
    """The table ``attribute_errors`` returns when no pair is matched."""
    return pd.DataFrame({c: pd.Series(dtype=float) for c in _ERROR_COLUMNS})


def attribute_errors(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, matching: Matching) -> pd.DataFrame:
    """One row per matched pair: ``pred, truth, iou``, the predicted and true ``area_m2``/``width_m`` and
    ``area_rel_error``/``width_rel_error`` = (pred - truth) / truth (NaN where the true value is 0)."""
    m = matching.matches
    if m.empty:
        return empty_attribute_errors()
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
