"""Whole-area scores and the fragment share, on hand-built tiles in UTM 36N with exactly known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import typer
from rasterio.transform import from_origin
from shapely.geometry import box
from typer.testing import CliRunner

from bldgseg.cli.evaluate import evaluate_command
from bldgseg.evaluation import evaluate
from bldgseg.export import write_gpkg
from tests.conftest import write_rgb

UTM = "EPSG:32636"
X0, Y0 = 500000.0, 100000.0


def sq(x0: float, y0: float, x1: float, y1: float):
    """A rectangle in metres east/north of (X0, Y0)."""
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def tile(folder: Path, name: str, x0: float) -> Path:
    """A 20 x 20 m image at 1 m whose west edge is ``x0`` m east of X0."""
    return write_rgb(
        folder / name, np.full((3, 20, 20), 90, np.uint8), transform=from_origin(X0 + x0, Y0 + 20, 1, 1)
    )


def cut_building_scene(tmp_path: Path, tables: dict[str, pd.DataFrame] | None = None) -> tuple[Path, Path]:
    """Tiles A (x 0..20) and B (20..40) with a building (x 16..26) cut by their shared edge into a 40 m² and a
    60 m² piece; a far tile C (x 1000..1020) with a 3 m² building predicted exactly."""
    a, b, c = (tile(tmp_path, n, x) for n, x in (("a.tif", 0), ("b.tif", 20), ("c.tif", 1000)))
    truth = pd.DataFrame({"geometry": [sq(16, 5, 26, 15), sq(1005, 5, 1006.5, 7)]})
    gt = tmp_path / "truth.gpkg"
    write_gpkg(gt, {"footprints": _frame(truth)})
    pred = pd.DataFrame(
        {
            "geometry": [sq(16, 5, 20, 15), sq(20, 5, 26, 15), sq(1005, 5, 1006.5, 7)],
            "source_image": [str(a), str(b), str(c)],
        }
    )
    gpkg = tmp_path / "run.gpkg"
    write_gpkg(gpkg, {"buildings": _frame(pred)}, tables)
    return gpkg, gt


def _frame(df: pd.DataFrame):
    import geopandas as gpd

    return gpd.GeoDataFrame(df, geometry="geometry", crs=UTM)


def test_a_building_cut_by_a_tile_edge_counts_as_its_two_pieces_over_the_whole_area(tmp_path):
    gpkg, gt = cut_building_scene(tmp_path)
    report = evaluate(gpkg, gt, min_area_m2=4.0)
    per_image = report.overall["polygon"]  # each image sees its piece of the building: exact matches
    assert (per_image["n_pred"], per_image["n_truth"], per_image["tp"], per_image["fp"]) == (3, 3, 3, 0)
    whole = report.whole_area
    assert (whole["images"], whole["regions"]) == (3, 2)
    assert whole["area_m2"] == pytest.approx(3 * 400.0, rel=1e-6)
    polygon = whole["polygon"]
    # the 60 m² piece matches the 100 m² building (IoU 0.6), the 40 m² piece (IoU 0.4) is a false positive
    assert (polygon["n_pred"], polygon["n_truth"], polygon["tp"], polygon["fp"], polygon["fn"]) == (3, 2, 2, 1, 0)
    assert polygon["precision"] == pytest.approx(2 / 3) and polygon["recall"] == 1.0
    assert polygon["f1"] == pytest.approx(0.8) and polygon["split"] == 1
    assert polygon["mean_iou"] == pytest.approx((0.6 + 1.0) / 2)
    assert whole["pixel"] == report.overall["pixel"]
    share = report.fragment_share
    assert share == {
        "min_area_m2": 4.0,
        "min_area_source": "given",
        "polygons": 3,
        "fragments": 1,  # the 3 m² building
        "share": pytest.approx(1 / 3),
    }


def test_truth_outside_the_images_is_clipped_to_their_union(tmp_path):
    a, b = tile(tmp_path, "a.tif", 0), tile(tmp_path, "b.tif", 20)
    gt = tmp_path / "truth.gpkg"
    write_gpkg(gt, {"footprints": _frame(pd.DataFrame({"geometry": [sq(30, 5, 50, 15), sq(60, 0, 70, 10)]}))})
    pred = pd.DataFrame({"geometry": [sq(30, 5, 40, 15)], "source_image": [str(b)]})
    gpkg = tmp_path / "run.gpkg"
    write_gpkg(gpkg, {"buildings": _frame(pred)})
    polygon = evaluate(gpkg, gt, images=[a, b]).whole_area["polygon"]
    assert (polygon["n_pred"], polygon["n_truth"], polygon["tp"], polygon["mean_iou"]) == (1, 1, 1, 1.0)


@pytest.mark.parametrize(
    ("card", "parameters", "expected"),
    [
        ({"name": "m", "min_area_m2": 50.0}, {"min_area_m2": 5.0}, (50.0, "model card m", 2)),
        ({"name": "m"}, {"min_area_m2": 5.0}, (5.0, "run", 1)),
        (None, None, (4.0, "default", 1)),
    ],
)
def test_fragment_share_takes_the_cards_minimum_area_else_the_runs(tmp_path, card, parameters, expected):
    tables = None
    if card is not None:
        runs = {"model": "m", "model_card": json.dumps(card), "parameters": json.dumps(parameters)}
        tables = {"runs": pd.DataFrame([runs])}
    gpkg, gt = cut_building_scene(tmp_path, tables)
    share = evaluate(gpkg, gt).fragment_share
    assert (share["min_area_m2"], share["min_area_source"], share["fragments"]) == expected
    assert share["polygons"] == 3 and share["share"] == pytest.approx(expected[2] / 3)


def _mask(path: Path, band: np.ndarray, x0: float) -> Path:
    profile = dict(driver="GTiff", width=band.shape[1], height=band.shape[0], count=1, dtype="uint8", crs=UTM)
    with rasterio.open(path, "w", transform=from_origin(X0 + x0, Y0 + 20, 1, 1), **profile) as ds:
        ds.write(band, 1)
    return path


def test_mask_truth_cut_by_raster_edges_is_one_building_over_the_whole_area(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    left, right = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    left[5:15, 16:20] = 1  # x 16..20
    right[5:15, 0:6] = 1  # x 20..26
    for name, x0, band in (("a", 0, left), ("b", 20, right)):
        _mask(tmp_path / "gt" / f"{name}.mask.tif", band, x0)
        _mask(tmp_path / "pred" / f"{name}.mask.tif", band, x0)
    report = evaluate(tmp_path / "pred", tmp_path / "gt")
    assert report.overall["polygon"]["tp"] == 2
    polygon = report.whole_area["polygon"]
    assert (polygon["n_pred"], polygon["n_truth"], polygon["tp"], polygon["fp"]) == (2, 1, 1, 1)
    assert report.fragment_share["min_area_source"] == "default"


def test_report_files_and_cli_summary_show_whole_area_and_fragments(tmp_path):
    gpkg, gt = cut_building_scene(tmp_path)
    app = typer.Typer()
    app.command("evaluate")(evaluate_command)
    out = tmp_path / "evaluation"
    result = CliRunner().invoke(app, [str(gpkg), str(gt), "--out", str(out), "--min-area", "45"])
    assert result.exit_code == 0, result.output
    assert "whole-area polygon F1" in result.output and "0.800" in result.output
    assert "fragment share (< 45 m², given)" in result.output and "0.667 (2 of 3)" in result.output
    data = json.loads((out / "report.json").read_text())
    assert data["whole_area"]["polygon"]["f1"] == pytest.approx(0.8)
    assert data["fragment_share"]["fragments"] == 2 and data["settings"]["min_area_source"] == "given"
    md = (out / "report.md").read_text()
    assert "## Whole area" in md and "| polygon F1 | 0.800 |" in md and "0.667 (2 of 3)" in md
    assert "<h2>Whole area</h2>" in (out / "report.html").read_text()
