"""``evaluate``: score predictions against ground truth per image, overall and whole-area, into a report.

Truth is reprojected to each image's CRS and scored on that image's unit (``bldgseg.evaluation.units``) with
the metrics of ``bldgseg.evaluation.metrics``; overall metrics are those of the counts summed over images;
whole-area metrics match once over the union of the images (``bldgseg.evaluation.whole_area``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS

from bldgseg.defaults import DEFAULT_MIN_AREA_M2
from bldgseg.errors import InputError
from bldgseg.evaluation.metrics import (
    DEFINITIONS,
    Matching,
    attribute_errors,
    empty_attribute_errors,
    match_polygons,
    pixel_from_counts,
    pixel_metrics,
    polygon_from_counts,
    summarize_attribute_errors,
)
from bldgseg.evaluation.report import EvaluationReport, ImageView
from bldgseg.evaluation.sources import (
    PathLike,
    find_sources,
    read_vectors,
    run_min_area,
    to_paths,
    truth_from_masks,
)
from bldgseg.evaluation.units import (
    EDGE_RULES,
    Grid,
    Unit,
    counted_polygons,
    raster_units,
    select_near,
    vector_units,
)
from bldgseg.evaluation.whole_area import WholeAreaScorer, image_regions
from bldgseg.progress import ProgressFn

__all__ = ["ProgressFn", "evaluate"]

WHOLE_AREA_DEFINITIONS = [
    "whole area: images whose footprints touch or overlap form a region; predictions and truth are clipped to "
    "the union of the region's footprints (truth from mask rasters also to the masks' extents, its pieces "
    "touching across raster edges dissolved) and matched once, so a building cut by tile edges counts as the "
    "pieces it became; counts summed over regions; its pixel counts are the overall ones (exact when images "
    "do not overlap)",
    "fragment share: predicted polygons (whole-area, measured whole in their UTM zone) smaller than the minimum "
    "building area, over all of them; the minimum is the one given, else the model card's, else the run's, "
    f"else {DEFAULT_MIN_AREA_M2:g} m²",
]


@dataclass
class _Scored:
    """One image's results: truth near it (in its CRS), pixel metrics, polygon matching, attribute errors."""

    truth: gpd.GeoDataFrame
    pixel: dict[str, Any]
    matching: Matching
    errors: pd.DataFrame


@dataclass
class _Totals:
    """Counts summed over images, from which the overall metrics are computed."""

    #: tp, fp, fn, tn
    pixel: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    #: n_pred, n_truth, tp, merged, split
    polygon: np.ndarray = field(default_factory=lambda: np.zeros(5, dtype=np.int64))
    iou_sum: float = 0.0  # of the matched pairs
    errors: list[pd.DataFrame] = field(default_factory=list)

    def add(self, scored: _Scored) -> None:
        """Add one image's counts and attribute errors."""
        pixel, matching = scored.pixel, scored.matching
        self.pixel += [pixel["tp"], pixel["fp"], pixel["fn"], pixel["tn"]]
        self.polygon += [
            matching.n_pred,
            matching.n_truth,
            matching.tp,
            len(matching.merged),
            len(matching.split),
        ]
        self.iou_sum += float(matching.matches["iou"].sum()) if matching.tp else 0.0
        self.errors.append(scored.errors)

    def overall(self, images: int) -> dict[str, Any]:
        """The ``overall`` section of the report."""
        filled = [e for e in self.errors if len(e)]
        all_errors = pd.concat(filled, ignore_index=True) if filled else empty_attribute_errors()
        return {
            "images": images,
            "pixel": pixel_from_counts(*(int(v) for v in self.pixel)),
            "polygon": polygon_from_counts(*(int(v) for v in self.polygon), self.iou_sum),
            "attributes": summarize_attribute_errors(all_errors),
        }


def _check_arguments(edge_rule: str, threshold: float, iou_threshold: float) -> None:
    if edge_rule not in EDGE_RULES:
        raise InputError(f"edge_rule: {edge_rule!r} is unknown; use one of {', '.join(EDGE_RULES)}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold: must be in [0, 1], got {threshold}; pass e.g. 0.5")
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"iou_threshold: must be in (0, 1], got {iou_threshold}; pass e.g. 0.5")


def _read_truth(
    gt_paths: list[Path], gt_layer: str | None, threshold: float
) -> tuple[gpd.GeoDataFrame, gpd.GeoSeries | None, dict[str, Any]]:
    """Truth footprints, the extents of truth mask rasters (None for footprint files) and settings."""
    gt_kind, gt_files = find_sources(gt_paths, "ground truth")
    if gt_kind == "vector":
        truth, layers = read_vectors(gt_files, gt_layer, "--gt-layer", strict=True)
        return truth, None, {"gt_layer": layers}
    truth, coverage = truth_from_masks(gt_files, threshold)
    return truth, coverage, {}


@dataclass
class _Predictions:
    """The units to score, their number, settings, the footprint layer read (None for rasters) and files."""

    units: Iterable[Unit]
    total: int
    settings: dict[str, Any]
    frame: gpd.GeoDataFrame | None
    files: list[Path]


def _prediction_units(
    pred_paths: list[Path],
    images: list[Path] | None,
    pred_layer: str,
    per_image_key: str,
    threshold: float,
) -> _Predictions:
    """The units to score, from footprint files or mask rasters of predictions."""
    pred_kind, pred_files = find_sources(pred_paths, "predictions")
    if pred_kind == "raster":
        return _Predictions(raster_units(pred_files, images, threshold), len(pred_files), {}, None, pred_files)
    strict = pred_layer != "buildings"
    pred, layers = read_vectors(pred_files, pred_layer, "--pred-layer", strict)
    units, total, unassigned = vector_units(pred, pred_files, images, per_image_key)
    settings = {"pred_layer": layers, "predictions_without_image": unassigned}
    return _Predictions(units, total, settings, pred, pred_files)


def _min_area(given: float | None, predictions: _Predictions) -> tuple[float, str]:
    """The minimum building area of the fragment share and where it comes from."""
    if given is not None:
        return float(given), "given"
    if predictions.frame is not None:
        value, source = run_min_area(predictions.files)
        if value is not None:
            return value, source
    return DEFAULT_MIN_AREA_M2, "default"


def _whole_area(
    grids: list[Grid],
    preds: list[gpd.GeoDataFrame],
    truth: gpd.GeoDataFrame,
    coverage: gpd.GeoSeries | None,
    iou_threshold: float,
) -> WholeAreaScorer:
    """Whole-area matching over the regions of the images (see ``bldgseg.evaluation.whole_area``)."""
    scorer = WholeAreaScorer(iou_threshold=iou_threshold)
    for region in image_regions(grids):
        scorer.add(region, preds, truth, coverage, dissolve_truth=coverage is not None)
    return scorer


def _score_unit(
    unit: Unit,
    truth: gpd.GeoDataFrame,
    coverage: gpd.GeoSeries | None,
    iou_threshold: float,
    edge_rule: str,
) -> _Scored:
    """Pixel metrics on the unit's grid, polygon matching and attribute errors of the polygons it counts."""
    grid = unit.grid
    near = select_near(truth, grid)
    valid = unit.valid if coverage is None else unit.valid & grid.rasterize(select_near(coverage, grid).values)
    pixel = pixel_metrics(unit.pred_pixels, grid.rasterize(near.geometry.values), valid)
    truth_counted = counted_polygons(near, grid, edge_rule)
    pred_counted = counted_polygons(unit.pred, grid, edge_rule)
    matching = match_polygons(pred_counted, truth_counted, iou_threshold)
    errors = attribute_errors(pred_counted, truth_counted, matching)
    return _Scored(truth=near, pixel=pixel, matching=matching, errors=errors)


def _image_metrics(unit: Unit, scored: _Scored) -> dict[str, Any]:
    """One image's entry in the report's ``per_image`` section."""
    grid = unit.grid
    return {
        "path": str(unit.path),
        "crs": CRS.from_user_input(grid.crs).to_string(),
        "width": grid.width,
        "height": grid.height,
        "pixel": scored.pixel,
        "polygon": scored.matching.metrics(),
        "attributes": summarize_attribute_errors(scored.errors),
    }


def _image_view(name: str, unit: Unit, scored: _Scored) -> ImageView:
    """What the image's overlay picture shows."""
    near, matching = scored.truth, scored.matching
    return ImageView(
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


def _unique_name(name: str, taken: dict[str, Any]) -> str:
    """``name``, or ``name (2)``, ``name (3)`` ... when it is already taken."""
    unique, k = name, 2
    while unique in taken:
        unique, k = f"{name} ({k})", k + 1
    return unique


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
    min_area_m2: float | None = None,
) -> EvaluationReport:
    """Score predictions against ground truth per image, overall and over the whole area.

    ``pred_path``: a footprint file (e.g. ``bldgseg run``'s GeoPackage, layer ``pred_layer``, the images named
    by the ``per_image_key`` column or given as ``images``) or mask/probability rasters (files or folders;
    each evaluated on its own grid, cut at ``threshold``; an image in ``images`` whose stem starts the mask's
    name is its background and, on the same grid, adds its valid mask). ``gt_path``: footprints in any OGR
    format (layer ``gt_layer``) or mask rasters (pixels outside them are not counted). Truth is reprojected to
    each image's CRS. Several files, or folders (rasters, else footprint files in them), are accepted for
    both. ``edge_rule`` decides which polygons count per image: ``"clip"`` or ``"point"``
    (``bldgseg.evaluation.units``). Whole-area scores match once over the union of the images
    (``bldgseg.evaluation.whole_area``); the fragment share counts predicted polygons under ``min_area_m2``
    (None: the model card's minimum building area recorded in a ``bldgseg run`` output, else the run's, else
    ``DEFAULT_MIN_AREA_M2``).
    """
    _check_arguments(edge_rule, threshold, iou_threshold)
    pred_paths, gt_paths = to_paths(pred_path), to_paths(gt_path)
    settings: dict[str, Any] = {
        "predictions": ", ".join(str(p) for p in pred_paths),
        "ground_truth": ", ".join(str(p) for p in gt_paths),
        "iou_threshold": float(iou_threshold),
        "probability_threshold": float(threshold),
    }
    truth, coverage, truth_settings = _read_truth(gt_paths, gt_layer, threshold)
    settings.update(truth_settings)
    image_list = [Path(p) for p in images] if images else None
    predictions = _prediction_units(pred_paths, image_list, pred_layer, per_image_key, threshold)
    settings.update(predictions.settings)
    settings["images"] = predictions.total
    settings["edge_rule"] = edge_rule
    min_area, min_area_source = _min_area(min_area_m2, predictions)
    settings["min_area_m2"] = min_area
    settings["min_area_source"] = min_area_source
    settings["definitions"] = [*DEFINITIONS, EDGE_RULES[edge_rule], *WHOLE_AREA_DEFINITIONS]

    per_image: dict[str, dict[str, Any]] = {}
    views: list[ImageView] = []
    totals = _Totals()
    grids: list[Grid] = []
    unit_preds: list[gpd.GeoDataFrame] = []
    for done, unit in enumerate(predictions.units, start=1):
        scored = _score_unit(unit, truth, coverage, iou_threshold, edge_rule)
        name = _unique_name(unit.name, per_image)
        per_image[name] = _image_metrics(unit, scored)
        views.append(_image_view(name, unit, scored))
        totals.add(scored)
        grids.append(unit.grid)
        unit_preds.append(unit.pred)
        if progress:
            progress("images", done, predictions.total)
    overall = totals.overall(len(per_image))
    preds = unit_preds if predictions.frame is None else [predictions.frame]
    scorer = _whole_area(grids, preds, truth, coverage, iou_threshold)
    return EvaluationReport(
        overall=overall,
        per_image=per_image,
        settings=settings,
        views=views,
        whole_area=scorer.result(overall["pixel"]),
        fragment_share=scorer.fragment_share(min_area, min_area_source),
    )
