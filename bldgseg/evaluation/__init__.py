"""Accuracy of building predictions against ground truth: metrics, per-image evaluation and its report."""

from bldgseg.evaluation.core import ProgressFn, evaluate
from bldgseg.evaluation.metrics import (
    DEFINITIONS,
    Matching,
    attribute_errors,
    match_polygons,
    pixel_metrics,
    summarize_attribute_errors,
)
from bldgseg.evaluation.report import (
    REPORT_FILES,
    EvaluationReport,
    ImageView,
    check_report_output,
    render_overlay,
    write_report,
)
from bldgseg.evaluation.units import EDGE_RULES

__all__ = [
    "DEFINITIONS",
    "EDGE_RULES",
    "REPORT_FILES",
    "EvaluationReport",
    "ImageView",
    "Matching",
    "ProgressFn",
    "attribute_errors",
    "check_report_output",
    "evaluate",
    "match_polygons",
    "pixel_metrics",
    "render_overlay",
    "summarize_attribute_errors",
    "write_report",
]
