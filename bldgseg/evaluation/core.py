"""``evaluate``: score predictions against ground truth per image and overall, into an ``EvaluationReport``.

Truth is reprojected to each image's CRS and scored on that image's unit (``bldgseg.evaluation.units``) with
the metrics of ``bldgseg.evaluation.metrics``; overall metrics are those of the counts summed over images.
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
from bldgseg.evaluation.sources import PathLike, find_sources, read_vectors, to_paths, truth_from_masks
from bldgseg.evaluation.units import (
    EDGE_RULES,
    Unit,
    counted_polygons,
    raster_units,
    select_near,
    vector_units,
)
from bldgseg.progress import ProgressFn

__all__ = ["ProgressFn", "evaluate"]



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


def _prediction_units(
    pred_paths: list[Path],
    images: list[Path] | None,
    pred_layer: str,
    per_image_key: str,
    threshold: float,
) -> tuple[Iterable[Unit], int, dict[str, Any]]:
    """The units to score, their number and settings, from footprint files or mask rasters of predictions."""
    pred_kind, pred_files = find_sources(pred_paths, "predictions")
    if pred_kind == "raster":
        return raster_units(pred_files, images, threshold), len(pred_files), {}
    strict = pred_layer != "buildings"
    pred, layers = read_vectors(pred_files, pred_layer, "--pred-layer", strict)
    units, total, unassigned = vector_units(pred, pred_files, images, per_image_key)
    return units, total, {"pred_layer": layers, "predictions_without_image": unassigned}


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
) -> EvaluationReport:
    """Score predictions against ground truth per image and overall.

    ``pred_path``: a footprint file (e.g. ``bldgseg run``'s GeoPackage, layer ``pred_layer``, the images named
    by the ``per_image_key`` column or given as ``images``) or mask/probability rasters (files or folders;
    each evaluated on its own grid, cut at ``threshold``; an image in ``images`` whose stem starts the mask's
    name is its background and, on the same grid, adds its valid mask). ``gt_path``: footprints in any OGR
    format (layer ``gt_layer``) or mask rasters (pixels outside them are not counted). Truth is reprojected to
    each image's CRS. Several files, or folders (rasters, else footprint files in them), are accepted for
    both. ``edge_rule`` decides which polygons count per image: ``"clip"`` or ``"point"``
    (``bldgseg.evaluation.units``).
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
    units, total, pred_settings = _prediction_units(
        pred_paths, image_list, pred_layer, per_image_key, threshold
    )
    settings.update(pred_settings)
    settings["images"] = total
    settings["edge_rule"] = edge_rule
    settings["definitions"] = [*DEFINITIONS, EDGE_RULES[edge_rule]]

    per_image: dict[str, dict[str, Any]] = {}
    views: list[ImageView] = []
    totals = _Totals()
    for done, unit in enumerate(units, start=1):
        scored = _score_unit(unit, truth, coverage, iou_threshold, edge_rule)
        name = _unique_name(unit.name, per_image)
        per_image[name] = _image_metrics(unit, scored)
        views.append(_image_view(name, unit, scored))
        totals.add(scored)
        if progress:
            progress("images", done, total)
    overall = totals.overall(len(per_image))
    return EvaluationReport(overall=overall, per_image=per_image, settings=settings, views=views)
