"""The before/after report of ``bldgseg adapt``: rows of the comparison, ``adapt_report.json`` and ``.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bldgseg.adapt.card import write_json
from bldgseg.files import atomic_replace

__all__ = ["REPORT_NAMES", "comparison_rows", "write_adapt_report"]

REPORT_NAMES = ("adapt_report.json", "adapt_report.md")

_ROWS = (
    ("pixel IoU", "pixel_iou"),
    ("pixel precision", "pixel_precision"),
    ("pixel recall", "pixel_recall"),
    ("polygon F1 (IoU >= 0.5)", "polygon_f1"),
    ("polygon precision", "polygon_precision"),
    ("polygon recall", "polygon_recall"),
    ("buildings predicted", "n_pred"),
    ("buildings in the footprints", "n_truth"),
    ("merged predictions", "merged"),
    ("split buildings", "split"),
    ("validation loss", "validation_loss"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def comparison_rows(comparison: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(metric, base model, adapted model)`` rows, values formatted (n/a where not measured)."""
    before, after = comparison.get("base", {}), comparison.get("adapted", {})
    return [(label, _fmt(before.get(key)), _fmt(after.get(key))) for label, key in _ROWS]


def _markdown(report: dict[str, Any]) -> str:
    adaptation = report["adaptation"]
    comparison = adaptation["comparison"]
    base = adaptation["base_model"]["name"]
    minutes = adaptation["minutes_budget"]
    budget = "none, a fixed number of steps" if minutes is None else f"{minutes:g} minutes"
    lines = [
        "# bldgseg adapt",
        "",
        f"Base model `{base}` adapted to lon/lat "
        f"({', '.join(f'{v:.5f}' for v in adaptation['region_bbox_lonlat'])}): "
        f"{adaptation['minutes_trained']:.1f} minutes (budget: {budget}), "
        f"{adaptation['steps']} steps on {adaptation['device']} ({adaptation['stopped']}).",
        "",
        f"Validation part ({comparison.get('scope', 'n/a')}): {len(adaptation['split']['validation_images'])} "
        f"image(s), {adaptation['split']['validation_buildings']} buildings held out; "
        f"training on {adaptation['split']['training_tiles']} tiles "
        f"({adaptation['split']['training_buildings']} buildings).",
        "",
        f"| metric | {base} | adapted |",
        "|---|---|---|",
        *(f"| {label} | {before} | {after} |" for label, before, after in comparison_rows(comparison)),
        "",
        f"Checkpoint: `{report['checkpoint']}` (use `bldgseg run … --model {report['checkpoint']}`).",
    ]
    if report.get("warnings"):
        lines += ["", *(f"- {w}" for w in report["warnings"])]
    return "\n".join(lines) + "\n"


def write_adapt_report(out_dir: Path, report: dict[str, Any]) -> dict[str, Path]:
    """Write ``adapt_report.json`` (everything) and ``adapt_report.md`` (the table) into ``out_dir``."""
    json_path = write_json(out_dir / REPORT_NAMES[0], report)
    text = _markdown(report)
    md_path = atomic_replace(out_dir / REPORT_NAMES[1], lambda tmp: tmp.write_text(text), ".md", sync=False)
    return {"json": json_path, "markdown": md_path}
