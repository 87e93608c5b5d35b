"""A model's scores on the validation part through the real pipeline: ``bldgseg run``, then ``bldgseg evaluate``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bldgseg.evaluation import EvaluationReport, evaluate
from bldgseg.pipeline import RunConfig, run
from bldgseg.progress import ProgressFn

__all__ = ["SCORE_KEYS", "score_model", "summarize_report"]

#: What a score dict holds (pixel and polygon metrics of the validation part; None where undefined).
SCORE_KEYS = (
    "pixel_iou",
    "pixel_precision",
    "pixel_recall",
    "polygon_f1",
    "polygon_precision",
    "polygon_recall",
    "n_pred",
    "n_truth",
    "merged",
    "split",
    "fragment_share",
)


def summarize_report(report: EvaluationReport) -> dict[str, Any]:
    """The report's whole-area scores when it has them (a ``whole_area`` section), else its overall ones."""
    data = report.to_dict()
    whole = data.get("whole_area")
    section = whole if isinstance(whole, dict) and {"pixel", "polygon"} <= set(whole) else data["overall"]
    pixel, polygon = section["pixel"], section["polygon"]
    scores: dict[str, Any] = {
        "pixel_iou": pixel.get("iou"),
        "pixel_precision": pixel.get("precision"),
        "pixel_recall": pixel.get("recall"),
        "polygon_f1": polygon.get("f1"),
        "polygon_precision": polygon.get("precision"),
        "polygon_recall": polygon.get("recall"),
        "n_pred": polygon.get("n_pred"),
        "n_truth": polygon.get("n_truth"),
        "merged": polygon.get("merged"),
        "split": polygon.get("split"),
    }
    scores["fragment_share"] = (data.get("fragment_share") or {}).get("share")
    scores["scope"] = "whole area" if section is whole else "per image, counts summed"
    return scores


def score_model(
    model: str | Path,
    images: Sequence[Path],
    footprints: Path,
    layer: str | None,
    output: Path,
    device: str,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run ``model`` on ``images`` into ``output`` (a GeoPackage) and score it against ``footprints``."""
    run(
        RunConfig(inputs=list(images), output=output, model=str(model), device=device, overwrite=True),
        progress=progress,
    )
    report = evaluate(output, footprints, images=list(images), gt_layer=layer)
    return summarize_report(report)
