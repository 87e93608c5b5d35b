"""``bldgseg evaluate``: score predictions against ground truth; parsing and the summary table only.

Registered in ``bldgseg.cli.app`` as ``reporting_errors(evaluate_command)``: project errors are raised
(``BldgsegError`` subclasses) for the caller to report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bldgseg.cli.options import min_area_option, out_folder_option, overwrite_option, threshold_option

if TYPE_CHECKING:
    from bldgseg.evaluation import EvaluationReport

__all__ = ["evaluate_command", "summary_table"]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def summary_table(report: EvaluationReport) -> Table:
    """The overall metrics as a two-column rich table."""
    pixel, polygon = report.overall["pixel"], report.overall["polygon"]
    table = Table(title=f"Evaluation: {report.overall['images']} image(s)")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    rows = [
        ("pixel IoU", pixel["iou"]),
        ("pixel precision", pixel["precision"]),
        ("pixel recall", pixel["recall"]),
        ("pixel F1", pixel["f1"]),
        ("polygon precision", polygon["precision"]),
        ("polygon recall", polygon["recall"]),
        ("polygon F1", polygon["f1"]),
        ("buildings pred / truth", f"{polygon['n_pred']} / {polygon['n_truth']}"),
        ("count error", polygon["count_error"]),
        ("merged", polygon["merged"]),
        ("split", polygon["split"]),
    ]
    whole = report.whole_area.get("polygon") if report.whole_area else None
    if whole:
        rows += [
            ("whole-area polygon precision", whole["precision"]),
            ("whole-area polygon recall", whole["recall"]),
            ("whole-area polygon F1", whole["f1"]),
            ("whole-area buildings pred / truth", f"{whole['n_pred']} / {whole['n_truth']}"),
        ]
    for label, value in rows:
        table.add_row(label, _fmt(value))
    if report.fragment_share:
        from bldgseg.evaluation.report import fragment_label, fragment_value

        table.add_row(fragment_label(report.fragment_share), fragment_value(report.fragment_share))
    return table


def evaluate_command(
    pred: Annotated[
        Path,
        typer.Argument(
            help="Predictions: a GeoPackage from `bldgseg run`, or mask/probability rasters (file/folder)."
        ),
    ],
    gt: Annotated[
        Path,
        typer.Argument(help="Ground truth: footprints in any OGR format, or mask rasters (file/folder)."),
    ],
    images: Annotated[
        list[Path] | None,
        typer.Option(
            "--images", "-i", help="Imagery the predictions came from (default: the source_image column)."
        ),
    ] = None,
    out: Annotated[Path, out_folder_option("Report folder.")] = Path("evaluation"),
    iou_threshold: Annotated[
        float, typer.Option("--iou-threshold", min=0.0, max=1.0, help="Polygon match at IoU >= this.")
    ] = 0.5,
    gt_layer: Annotated[str | None, typer.Option("--gt-layer", help="Layer of GT to read.")] = None,
    pred_layer: Annotated[str, typer.Option("--pred-layer", help="Layer of PRED to read.")] = "buildings",
    threshold: Annotated[float, threshold_option("Cut for probability rasters.")] = 0.5,
    edge_rule: Annotated[
        str, typer.Option("--edge-rule", help="Buildings cut by an image edge: clip (default) or point.")
    ] = "clip",
    min_area: Annotated[
        float | None,
        min_area_option(
            "Fragment share: polygons under this (m²) are fragments (default: the model card's, else the run's)."
        ),
    ] = None,
    overwrite: Annotated[bool, overwrite_option("Replace an existing report.")] = False,
) -> None:
    """Compare predictions with ground truth: pixel and polygon metrics, report with overlay pictures."""
    from bldgseg.evaluation import check_report_output, evaluate, write_report

    check_report_output(out, overwrite)
    report = evaluate(
        pred,
        gt,
        images=images or None,
        pred_layer=pred_layer,
        gt_layer=gt_layer,
        iou_threshold=iou_threshold,
        threshold=threshold,
        edge_rule=edge_rule,
        min_area_m2=min_area,
    )
    written = write_report(report, out, overwrite=overwrite)
    Console().print(summary_table(report))
    Console(stderr=True).print(
        f"[green]wrote[/] {written['markdown']} (and report.json, report.html, overlays/)"
    )
