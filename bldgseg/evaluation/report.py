"""The evaluation report: metrics as JSON, a readable Markdown/HTML page and overlay pictures (PIL).

Overlays show the imagery (first 3 bands, downsampled to at most 1024 pixels on the long side, small images
enlarged by a whole factor towards 512) with ground-truth outlines in cyan and predicted outlines in magenta;
matched outlines are thin, unmatched ones (false negatives in cyan, false positives in magenta) thick; a merged
prediction (one outline over several true buildings) is thick orange and a split truth (one building cut into
several predictions) thick yellow.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image, ImageDraw
from rasterio.enums import Resampling
from rasterio.windows import Window

from bldgseg.errors import OutputExistsError
from bldgseg.files import atomic_replace
from bldgseg.io import open_raster_info, read_rgb

__all__ = [
    "OVERLAY_MAX_SIDE",
    "OVERLAY_MIN_SIDE",
    "REPORT_FILES",
    "EvaluationReport",
    "ImageView",
    "check_report_output",
    "fragment_label",
    "fragment_value",
    "render_overlay",
    "write_report",
]

#: Longest side of an overlay picture, in pixels: larger images are downsampled to it.
OVERLAY_MAX_SIDE = 1024
#: Small images are enlarged by a whole factor towards this long side, so outlines stay readable.
OVERLAY_MIN_SIDE = 512
#: Files ``write_report`` creates in its folder (besides ``overlays/``).
REPORT_FILES = ("report.json", "report.md", "report.html")
TRUTH_RGB = (0, 255, 255)  # cyan
PRED_RGB = (255, 0, 255)  # magenta
MERGED_RGB = (255, 140, 0)  # orange: a prediction over several true buildings
SPLIT_RGB = (255, 255, 0)  # yellow: a true building cut into several predictions
LEGEND = (
    "Outlines: **cyan** = ground truth, **magenta** = prediction. Thin = matched pair (IoU at or above the "
    "threshold) or not counted in this image; **thick cyan** = false negative (missed building), "
    "**thick magenta** = false positive, **thick orange** = merged prediction (covers two or more true "
    "buildings), **thick yellow** = split truth (cut into two or more predictions)."
)

WHOLE_AREA_NOTE = (
    "Predictions and truth clipped to the union of the images and matched once: a building cut by tile edges "
    "counts as the pieces it became (the summary above scores each image on its own)."
)
_PIXEL_ROWS = [
    ("iou", "pixel IoU"),
    ("precision", "pixel precision"),
    ("recall", "pixel recall"),
    ("f1", "pixel F1"),
]
_POLYGON_ROWS = [
    ("precision", "polygon precision"),
    ("recall", "polygon recall"),
    ("f1", "polygon F1"),
    ("mean_iou", "mean IoU of matched pairs"),
    ("n_pred", "predicted buildings"),
    ("n_truth", "true buildings"),
    ("tp", "matched (TP)"),
    ("fp", "false positives"),
    ("fn", "false negatives"),
    ("merged", "merged predictions"),
    ("split", "split truths"),
    ("count_error", "count error (pred - truth)"),
    ("count_error_relative", "relative count error"),
]
_ATTRIBUTE_ROWS = [
    ("pairs", "matched pairs measured"),
    ("area_rel_error_median", "area: median relative error"),
    ("area_abs_rel_error_median", "area: median absolute relative error"),
    ("area_abs_rel_error_mean", "area: mean absolute relative error"),
    ("width_rel_error_median", "width: median relative error"),
    ("width_abs_rel_error_median", "width: median absolute relative error"),
    ("width_abs_rel_error_mean", "width: mean absolute relative error"),
]
_PER_IMAGE_COLUMNS = [
    ("pixel", "iou", "pixel IoU"),
    ("pixel", "precision", "pixel P"),
    ("pixel", "recall", "pixel R"),
    ("pixel", "f1", "pixel F1"),
    ("polygon", "n_pred", "pred"),
    ("polygon", "n_truth", "truth"),
    ("polygon", "tp", "TP"),
    ("polygon", "fp", "FP"),
    ("polygon", "fn", "FN"),
    ("polygon", "precision", "P"),
    ("polygon", "recall", "R"),
    ("polygon", "f1", "F1"),
    ("polygon", "merged", "merged"),
    ("polygon", "split", "split"),
    ("polygon", "count_error", "count err"),
]


@dataclass
class ImageView:
    """What one overlay shows: a background raster and outlines (in the background's CRS) with their status.

    ``kind`` is ``"rgb"`` (imagery, first 3 bands or the ones in ``bands``) or ``"mask"`` (a 1-band mask or
    probability raster shown in grey). ``truth_thick``/``pred_thick`` flag the unmatched outlines, ``split`` the
    split truths and ``merged`` the merged predictions (None: none flagged).
    """

    name: str
    background: Path
    kind: str
    truth: np.ndarray
    truth_thick: np.ndarray
    pred: np.ndarray
    pred_thick: np.ndarray
    bands: tuple[int, int, int] | None = None
    split: np.ndarray | None = None
    merged: np.ndarray | None = None


@dataclass
class EvaluationReport:
    """Metrics of one evaluation: ``overall`` and ``per_image`` (image name -> metrics), plus ``settings``.

    Each metrics dict has ``pixel``, ``polygon`` and ``attributes`` sections (see
    ``bldgseg.evaluation.metrics``); undefined ratios (e.g. precision with no prediction) are ``None``.
    ``whole_area`` has the same sections over the union of the images, ``fragment_share`` the share of
    predicted polygons under the minimum building area. ``views`` feed the overlay pictures.
    """

    overall: dict[str, Any]
    per_image: dict[str, dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    #: Scores over the union of the images, matched once (``bldgseg.evaluation.whole_area``); same sections.
    whole_area: dict[str, Any] = field(default_factory=dict)
    #: ``min_area_m2``, ``min_area_source``, ``polygons``, ``fragments`` and ``share`` of predicted polygons.
    fragment_share: dict[str, Any] = field(default_factory=dict)
    views: list[ImageView] = field(default_factory=list, repr=False, compare=False)
    _overlays: dict[Path, dict[str, Path]] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Settings and metrics as plain JSON-compatible data."""
        return _jsonable(
            {
                "settings": self.settings,
                "overall": self.overall,
                "whole_area": self.whole_area,
                "fragment_share": self.fragment_share,
                "per_image": self.per_image,
            }
        )

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the metrics as JSON (NaN never appears: undefined values are null)."""
        path = Path(path)
        _write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    def write_overlays(self, folder: str | os.PathLike[str]) -> dict[str, Path]:
        """One PNG per image in ``folder`` (created); returns image name -> PNG path."""
        folder = Path(folder)
        cached = self._overlays.get(folder.resolve())
        if cached is not None and all(p.exists() for p in cached.values()):
            return dict(cached)
        folder.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        used: set[str] = set()
        for view in self.views:
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(view.name).stem) or "image"
            name, k = f"{stem}.png", 2
            while name in used:
                name, k = f"{stem}_{k}.png", k + 1
            used.add(name)
            render_overlay(view).save(folder / name)
            written[view.name] = folder / name
        self._overlays[folder.resolve()] = dict(written)
        return written

    def to_markdown(self, path: str | os.PathLike[str]) -> Path:
        """Write the Markdown report and its overlay PNGs (in ``overlays/`` beside it)."""
        path = Path(path)
        overlays = self.write_overlays(path.parent / "overlays") if self.views else {}
        _write_text(path, _markdown(self, {k: _rel(v, path.parent) for k, v in overlays.items()}))
        return path

    def to_html(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-describing HTML page with the same content and ``<img>`` tags for the overlays."""
        path = Path(path)
        overlays = self.write_overlays(path.parent / "overlays") if self.views else {}
        _write_text(path, _html(self, {k: _rel(v, path.parent) for k, v in overlays.items()}))
        return path


def check_report_output(folder: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Raise ``OutputExistsError`` when ``folder`` already holds a report and ``overwrite`` is False."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder}: exists and is not a folder; choose another --out folder")
    existing = [name for name in REPORT_FILES if (folder / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{folder}: already holds {', '.join(existing)}; pass --overwrite to replace it or choose another --out"
        )


def write_report(
    report: EvaluationReport, folder: str | os.PathLike[str], overwrite: bool = False
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``report.html`` and ``overlays/*.png`` into ``folder``.

    Refuses (``OutputExistsError``) a folder that already holds a report unless ``overwrite``; with it, old
    overlay PNGs are removed first so none from an earlier run remain.
    """
    folder = Path(folder)
    check_report_output(folder, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    old = folder / "overlays"
    if old.is_dir():
        for png in old.glob("*.png"):
            png.unlink()
    return {
        "json": report.to_json(folder / "report.json"),
        "markdown": report.to_markdown(folder / "report.md"),
        "html": report.to_html(folder / "report.html"),
    }


# -------------------- overlays


def _background(view: ImageView) -> tuple[np.ndarray, Affine, int, int]:
    """Downsampled RGB uint8 (h, w, 3), the raster's transform and its full size (height, width)."""
    with rasterio.open(view.background) as ds:
        height, width, transform = ds.height, ds.width, ds.transform
        count = ds.count
    side = max(height, width)
    scale = OVERLAY_MAX_SIDE / side if side > OVERLAY_MAX_SIDE else float(max(1, OVERLAY_MIN_SIDE // side))
    oh, ow = max(1, round(height * scale)), max(1, round(width * scale))
    if view.kind == "rgb":
        bands = view.bands or ((1, 2, 3) if count >= 3 else (1, 1, 1))
        info = open_raster_info(view.background, bands=bands)
        rgb, _valid = read_rgb(info, Window(0, 0, width, height), out_shape=(oh, ow))
        return np.moveaxis(rgb, 0, -1), transform, height, width
    with rasterio.open(view.background) as ds:
        band = ds.read(1, out_shape=(oh, ow), resampling=Resampling.average, masked=True)
        scale_tag = ds.scales[0] or 1.0
    values = band.filled(0).astype(np.float64) * scale_tag
    top = float(np.nanmax(values)) if values.size else 0.0
    grey = np.clip(values / top if top > 1.0 else values, 0.0, 1.0)
    grey = np.nan_to_num(grey * 180.0 + 40.0 * (grey > 0))  # buildings light grey, background dark
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1), transform, height, width


def _rings(geom: Any) -> list[np.ndarray]:
    """Coordinates of every exterior and interior ring of a (multi)polygon."""
    if geom is None or geom.is_empty:
        return []
    rings = []
    for part in getattr(geom, "geoms", [geom]):
        if part.geom_type != "Polygon":
            continue
        rings.append(np.asarray(part.exterior.coords)[:, :2])
        rings.extend(np.asarray(r.coords)[:, :2] for r in part.interiors)
    return rings


def _flags(flags: np.ndarray | None, default: np.ndarray) -> np.ndarray:
    return default if flags is None else np.asarray(flags, bool)


def render_overlay(view: ImageView) -> Image.Image:
    """The overlay picture of one image (see the module docstring for colours and line widths)."""
    rgb, transform, height, width = _background(view)
    oh, ow = rgb.shape[:2]
    image = Image.fromarray((rgb.astype(np.float32) * 0.85).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    thin = 1 if max(oh, ow) < 400 else 2
    thick = thin + 3
    inv = ~transform
    sx, sy = ow / width, oh / height
    none_t, none_p = np.zeros(len(view.truth), bool), np.zeros(len(view.pred), bool)
    layers = (  # truth one pixel wider underneath, so it shows as a fringe around a matching prediction
        (view.truth, view.truth_thick, TRUTH_RGB, thin + 1),
        (view.pred, view.pred_thick, PRED_RGB, thin),
        # merged and split on top, drawn thick in their own colours
        (view.truth[_flags(view.split, none_t)], None, SPLIT_RGB, thick),
        (view.pred[_flags(view.merged, none_p)], None, MERGED_RGB, thick),
    )
    for geoms, flags, colour, line_width in layers:
        flags = np.zeros(len(geoms), bool) if flags is None else flags
        for geom, bold in zip(geoms, flags, strict=True):
            for ring in _rings(geom):
                cols, rows = inv @ (ring[:, 0], ring[:, 1])
                pts = [
                    (float(c) * sx, float(r) * sy)
                    for c, r in zip(np.asarray(cols), np.asarray(rows), strict=True)
                    if math.isfinite(c) and math.isfinite(r)
                ]
                if len(pts) >= 2:  # one segment past the start, so the closing corner is joined too
                    draw.line([*pts, pts[1]], fill=colour, width=thick if bold else line_width, joint="curve")
    return image


# -------------------- text


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.3f}"
        return "0.000" if text == "-0.000" else text
    return str(value)


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _summary_rows(overall: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(label, _fmt(overall.get("pixel", {}).get(key))) for key, label in _PIXEL_ROWS]
    rows += [(label, _fmt(overall.get("polygon", {}).get(key))) for key, label in _POLYGON_ROWS]
    rows += [(label, _fmt(overall.get("attributes", {}).get(key))) for key, label in _ATTRIBUTE_ROWS]
    return rows


def _whole_area_rows(report: EvaluationReport) -> list[tuple[str, str]]:
    """The whole-area polygon metrics and the fragment share, as (label, value) rows."""
    rows = []
    if report.whole_area:
        polygon = report.whole_area.get("polygon", {})
        rows.append(("images (regions)", f"{report.whole_area['images']} ({report.whole_area['regions']})"))
        rows.append(("area (m²)", f"{report.whole_area['area_m2']:.0f}"))
        rows += [(label, _fmt(polygon.get(key))) for key, label in _POLYGON_ROWS]
    if report.fragment_share:
        rows.append((fragment_label(report.fragment_share), fragment_value(report.fragment_share)))
    return rows


def fragment_label(share: dict[str, Any]) -> str:
    """``fragment share (< 10 m², model card aerial-buildings)``."""
    return f"fragment share (< {share['min_area_m2']:g} m², {share['min_area_source']})"


def fragment_value(share: dict[str, Any]) -> str:
    """``0.125 (2 of 16)``."""
    return f"{_fmt(share['share'])} ({share['fragments']} of {share['polygons']})"


def _settings_lines(settings: dict[str, Any]) -> list[tuple[str, str]]:
    keys = (
        "predictions",
        "ground_truth",
        "images",
        "iou_threshold",
        "probability_threshold",
        "edge_rule",
        "predictions_without_image",
    )
    return [(k.replace("_", " "), _fmt(settings[k])) for k in keys if k in settings]


def _definitions(settings: dict[str, Any]) -> list[str]:
    return [str(line) for line in settings.get("definitions", [])]


def _per_image_rows(per_image: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [name, *(_fmt(metrics.get(section, {}).get(key)) for section, key, _ in _PER_IMAGE_COLUMNS)]
        for name, metrics in per_image.items()
    ]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def _markdown(report: EvaluationReport, overlays: dict[str, str]) -> str:
    lines = ["# Building segmentation evaluation", ""]
    lines += [f"- {k}: {_md_escape(v)}" for k, v in _settings_lines(report.settings)]
    lines += ["", "## Summary", ""]
    lines += _md_table(["metric", "value"], _summary_rows(report.overall))
    whole = _whole_area_rows(report)
    if whole:
        lines += ["", "## Whole area", "", WHOLE_AREA_NOTE, ""]
        lines += _md_table(["metric", "value"], whole)
    lines += ["", "## Per image", ""]
    header = ["image", *(label for _, _, label in _PER_IMAGE_COLUMNS)]
    lines += _md_table(header, _per_image_rows(report.per_image))
    if overlays:
        lines += ["", "## Images", "", LEGEND, ""]
        for name, rel in overlays.items():
            lines += [f"### {_md_escape(name)}", "", f"![{_md_escape(name)}]({rel})", ""]
    definitions = _definitions(report.settings)
    if definitions:
        lines += ["", "## Definitions", ""]
        lines += [f"- {d}" for d in definitions]
    return "\n".join(lines).rstrip() + "\n"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(report: EvaluationReport, overlays: dict[str, str]) -> str:
    legend = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(LEGEND))
    legend = legend.replace("<b>cyan</b>", '<b class="cyan">cyan</b>').replace(
        "<b>magenta</b>", '<b class="magenta">magenta</b>'
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Building segmentation evaluation</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}td:first-child,"
        "th:first-child{text-align:left}img{max-width:100%;border:1px solid #888}"
        ".cyan{color:#00a0a0;font-weight:bold}.magenta{color:#c000c0;font-weight:bold}</style></head><body>",
        "<h1>Building segmentation evaluation</h1>",
        "<ul>"
        + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in _settings_lines(report.settings))
        + "</ul>",
        "<h2>Summary</h2>",
        _html_table(["metric", "value"], _summary_rows(report.overall)),
    ]
    whole = _whole_area_rows(report)
    if whole:
        parts += [
            "<h2>Whole area</h2>",
            f"<p>{html.escape(WHOLE_AREA_NOTE)}</p>",
            _html_table(["metric", "value"], whole),
        ]
    parts += [
        "<h2>Per image</h2>",
        _html_table(
            ["image", *(label for _, _, label in _PER_IMAGE_COLUMNS)], _per_image_rows(report.per_image)
        ),
    ]
    if overlays:
        parts += ["<h2>Images</h2>", f"<p>{legend}</p>"]
        for name, rel in overlays.items():
            parts.append(
                f"<h3>{html.escape(name)}</h3>"
                f'<img src="{html.escape(rel, quote=True)}" alt="{html.escape(name, quote=True)}">'
            )
    definitions = _definitions(report.settings)
    if definitions:
        parts += [
            "<h2>Definitions</h2>",
            "<ul>" + "".join(f"<li>{html.escape(d)}</li>" for d in definitions) + "</ul>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a hidden sibling renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_replace(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), sync=False)
